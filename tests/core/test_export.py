"""`upm export`: a registered snapshot as a SavedModel that takes the raw feature map, loaded in
a fresh process with nothing but TensorFlow, predicting as the Python Adapter does; its manifest
verifies; a tampered or unsigned snapshot is refused as promotion would refuse it."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.graph_hashing import blake2b_64, slots_and_signs
from model.hashing import FeatureHasher
from model.lifecycle.adapter import Adapter
from model.lifecycle.export import MANIFEST, ExportError, export_saved_model, verify_export
from model.network import CLASSIFIERS, ModelConfig
from state.records import FeatureWindow
from state.trainer import TrainerConfig, TrainerState
from tests.core.governance_helpers import T0, World, publish

ROWS = [{"a": 1.0, "b": -0.5, "c": 0.25}, {"a": -1.0}, {}, {"c": 3.5, "unseen feature é": 2.0},
        {"a": 1e-3, "b": 4.0, "c": -2.0, "d": 0.5}]

LOAD = """
import json, sys
import numpy as np
import tensorflow as tf
rows = json.loads(sys.stdin.read())
k = max([len(r) for r in rows] + [1])
names = [[n.encode() for n in r] + [b""] * (k - len(r)) for r in rows]
values = [list(r.values()) + [0.0] * (k - len(r)) for r in rows]
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(feature_names=tf.constant(names, tf.string, shape=[len(rows), k]),
            feature_values=tf.constant(values, tf.float64, shape=[len(rows), k]))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
"""


def load_in_a_fresh_process(directory, rows):
    proc = subprocess.run([sys.executable, "-c", LOAD, str(directory)], input=json.dumps(rows),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=400)), min_size=1,
                max_size=8))
def test_the_graph_hashes_names_as_hashlib_and_the_hasher_do(names):
    raw = [n.encode("utf-8", "surrogatepass") if isinstance(n, str) else n for n in names]
    got = [int(h) for h in blake2b_64(raw).numpy()]
    assert got == [int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")
                   for b in raw]
    text = [n for n in names if isinstance(n, str) and n.encode("utf-8", "ignore") == n.encode(
        "utf-8", "surrogatepass")]
    if text:
        slots, signs = slots_and_signs([t.encode() for t in text], 977)
        hasher = FeatureHasher(977)
        assert list(zip(slots.numpy().tolist(), signs.numpy().tolist())) == [
            hasher.slot(t) for t in text]


def trained_snapshot(tenant, head):
    ts = TrainerState(tenant, ModelConfig(head=head, input_width=64, hidden_units=8),
                      TrainerConfig(learning_rate=0.1, batch_size=4, snapshot_interval=200))
    rng = np.random.default_rng(3)
    for i in range(400):
        x = rng.normal(size=3) * [1.0, 10.0, 0.1]
        y = float(x @ [0.5, -0.02, 3.0] > 0) if head in CLASSIFIERS else float(
            100 + x @ [5.0, -0.2, 30.0])
        w = FeatureWindow(f"{tenant}-w{i}", tenant, T0 + i * 1000, T0 + i * 1000 + 1000,
                          {"a": x[0], "b": x[1], "c": x[2]}, y)
        snaps = ts.on_window(w).snapshots + ts.drain().snapshots
        if snaps and i > 200:
            return snaps[-1]
    return ts.flush().snapshots[-1]


@pytest.mark.parametrize("head", ["logistic", "mlp", "linear", "mlp_logistic"])
def test_an_export_predicts_in_a_fresh_process_as_the_adapter_does(tmp_path, head):
    w = World(tmp_path, n=1)
    snap = trained_snapshot("acme", head)
    publish(w.store, w.registry, w.signer, snap)
    sid = snap.manifest["snapshot_id"]
    w.walk_to_active("acme", sid)
    ad = Adapter(w.registry, w.store, w.verifier, "acme", "active", sleep=lambda s: None, env={})
    assert ad.sync().status == "adopted"
    out = tmp_path / "export"
    m = export_saved_model(w.registry, w.store, w.verifier, "acme", out, stage="active")
    assert (m["snapshot_id"], m["stage"], m["snapshot_sha256"]) == (
        sid, "active", w.registry.view("acme").artifact(sid).sha256)
    assert m["signed_by"] and m["snapshot_signature"].startswith("ed25519:")
    served = load_in_a_fresh_process(out, ROWS)
    pred, emb = ad.predict(ROWS), ad.embed(ROWS)
    assert np.std(pred) > 0  # a model that learned something, so agreement means something
    np.testing.assert_allclose(served["prediction"], pred, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(served["embedding"], emb, rtol=1e-6, atol=1e-6)
    assert verify_export(out) == m


def test_the_manifest_catches_a_changed_missing_or_extra_file(tmp_path):
    w = World(tmp_path, n=1)
    sid = w.ids()[0]
    out = tmp_path / "export"
    export_saved_model(w.registry, w.store, w.verifier, "acme", out, snapshot_id=sid)
    assert set(verify_export(out)["files"]) >= {"saved_model.pb"}
    pb = out / "saved_model.pb"
    good = pb.read_bytes()
    pb.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(ExportError, match="saved_model.pb hashes to"):
        verify_export(out)
    pb.write_bytes(good)
    (out / "assets.extra" / "notes.txt").write_text("hi")
    with pytest.raises(ExportError, match="notes.txt is not listed"):
        verify_export(out)
    (out / "assets.extra" / "notes.txt").unlink()
    next(out.glob("variables/*.index")).unlink()
    with pytest.raises(ExportError, match="listed but missing"):
        verify_export(out)


def test_a_tampered_or_unsigned_snapshot_is_refused(tmp_path):
    w = World(tmp_path, n=3)
    a, b, c = w.ids()
    path = w.store.path_of(w.registry.view("acme").artifact(a).uri)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="promotion.*sha256 mismatch"):
        export_saved_model(w.registry, w.store, w.verifier, "acme", tmp_path / "x", snapshot_id=a)
    unsigned = replace_signature(w, b, None)
    with pytest.raises(ExportError, match="unsigned"):
        export_saved_model(w.registry, w.store, w.verifier, "acme", tmp_path / "x",
                           snapshot_id=unsigned)
    other = World(tmp_path / "other", n=1)  # a valid signature by a key this store does not trust
    with pytest.raises(ExportError, match="unknown key"):
        export_saved_model(w.registry, w.store, other.verifier, "acme", tmp_path / "x",
                           snapshot_id=c)
    assert not (tmp_path / "x").exists()


def test_with_no_snapshot_named_the_newest_verified_unquarantined_one_is_exported(tmp_path):
    w = World(tmp_path, n=4)
    a, b, c, d = w.ids()
    m = export_saved_model(w.registry, w.store, w.verifier, "acme", tmp_path / "all-good")
    assert (m["snapshot_id"], m["chosen_as"], m["skipped"]) == (d, "newest verified", [])
    w.registry.update(lambda doc: doc["tenants"]["acme"]["artifacts"][d].update(quarantined=True))
    path = w.store.path_of(w.registry.view("acme").artifact(c).uri)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    m = export_saved_model(w.registry, w.store, w.verifier, "acme", tmp_path / "latest",
                           snapshot_id="latest")
    assert m["snapshot_id"] == b and verify_export(tmp_path / "latest")["snapshot_id"] == b
    assert m["skipped"][0] == f"{d}: quarantined" and "sha256 mismatch" in m["skipped"][1]
    replace_signature(w, b, None)
    replace_signature(w, a, None)
    with pytest.raises(ExportError, match="no snapshot of acme is both unquarantined and verified"):
        export_saved_model(w.registry, w.store, w.verifier, "acme", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def replace_signature(w, sid, signature):
    w.registry.update(lambda d: d["tenants"]["acme"]["artifacts"][sid].update(
        signature=signature))
    return sid


def test_upm_export_on_the_command_line(tmp_path):
    w = World(tmp_path, n=1)
    sid = w.ids()[0]
    w.gov.promote("acme", "staging", sid, "ops", "new")
    env = {"UPM_VERIFY_KEY_FILES": str(w.pub), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "runners.cli", "export", "--store", str(tmp_path), *a],
        capture_output=True, text=True, timeout=300, env=env)
    ok = run("--tenant", "acme", "--stage", "staging", "--format", "saved_model",
             str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert sid in ok.stdout and verify_export(tmp_path / "out")["snapshot_id"] == sid
    exported = _tree_digest(tmp_path / "out")
    assert not [w for w in ("FutureWarning", "cuInit", "Traceback") if w in ok.stdout + ok.stderr], (
        ok.stderr[-2000:])  # the console carries UPM's lines only
    newest = run("--tenant", "acme", str(tmp_path / "newest"))  # no stage or id: the newest
    assert newest.returncode == 0, newest.stderr[-2000:]
    assert f"exported {sid} (the newest snapshot that is not quarantined" in newest.stdout
    for args, words in ((("--tenant", "acme", "--stage", "active"), "points to no snapshot"),
                        (("--tenant", "nobody", "--stage", "staging"), "no artifacts"),
                        (("--tenant", "acme", "--snapshot", sid), "not an empty directory")):
        bad = run(*args, str(tmp_path / "out"))
        last = bad.stderr.strip().splitlines()[-1]
        assert bad.returncode == 1 and words in last and "Traceback" not in bad.stderr, last
    assert _tree_digest(tmp_path / "out") == exported  # a refused export writes nothing


def _tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
