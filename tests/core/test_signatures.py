"""Signatures end to end: an adapter refuses an artifact whose registered signature is bad or
missing and keeps serving what it had; `upm registry verify` names a bad signature and an
unsigned artifact, and `--require-signed` fails on the latter."""

import base64
import json
import os
import subprocess
import sys

import numpy as np

from tests.core.governance_helpers import World, make_snapshots, publish
from tests.core.test_adapter_retention import ROWS, adapter


def _edit_artifact(world, sid, **changes):
    path = world.root / "registry" / "models.json"
    doc = json.loads(path.read_text())
    doc["tenants"]["acme"]["artifacts"][sid].update(changes)
    path.write_text(json.dumps(doc))


def _flip(sig: str) -> str:
    """The same `ed25519:<key id>:<base64>` signature with one bit of it flipped."""
    head, _, b64 = sig.rpartition(":")
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 0x01
    return f"{head}:{base64.b64encode(bytes(raw)).decode()}"


def test_adapter_refuses_bad_and_missing_signatures_and_keeps_serving(tmp_path):
    w = World(tmp_path)
    a, b, c = w.ids()[:3]
    w.walk_to_active("acme", a)
    ad = adapter(w)
    assert ad.sync().status == "adopted"
    before = ad.predict(ROWS)
    for sid, change in ((b, lambda e: {"signature": _flip(e["signature"])}),
                        (c, lambda e: {"signature": None})):
        w.walk_to_active("acme", sid)
        _edit_artifact(w, sid, **change(w.registry.artifact("acme", sid)))
        r = ad.sync()
        assert r.status == "failed" and "signature" in r.error.lower(), r
        assert ad.current.snapshot_id == a and np.array_equal(ad.predict(ROWS), before)


def _verify(root, pub, *extra):
    env = {**os.environ, "UPM_VERIFY_KEY_FILES": str(pub)}
    return subprocess.run([sys.executable, "-m", "runners.cli", "registry", "verify", "--store",
                           str(root), *extra], capture_output=True, text=True, timeout=120,
                          env=env)


def test_registry_verify_names_bad_signatures_and_unsigned_artifacts(tmp_path):
    w = World(tmp_path, n=2)
    a, b = w.ids()
    ok = _verify(tmp_path, w.pub)
    assert ok.returncode == 0 and ok.stdout.count("signature ok") == 2, ok.stdout
    unsigned = make_snapshots("acme", 3)[2]
    publish(w.store, w.registry, None, unsigned)
    out = _verify(tmp_path, w.pub)
    assert out.returncode == 0 and "UNSIGNED" in out.stdout and "1 without" in out.stdout
    strict = _verify(tmp_path, w.pub, "--require-signed")
    assert strict.returncode == 1 and "--require-signed" in strict.stdout
    _edit_artifact(w, b, signature=_flip(w.registry.artifact("acme", b)["signature"]))
    bad = _verify(tmp_path, w.pub)
    line = next(x for x in bad.stdout.splitlines() if b in x)
    assert bad.returncode == 1 and line.startswith("BAD") and "BAD SIGNATURE" in line
