"""Snapshot stores and the registry on GCS (fake-gcs-server) and S3 (moto_server), both real
servers started by fixtures: writes, verified reads, listing, create-only conflicts, and the
registry's compare-and-swap under two concurrent writers."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model.lifecycle.registry import open_registry
from model.snapshot import Snapshot, SnapshotIntegrityError, encode
from model.lifecycle.store import SnapshotConflict, open_store
from tests.core import servers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gcs():
    with servers.fake_gcs() as endpoint, servers.env(servers.gcs_env(endpoint)):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        client = storage.Client(project="upm-test", credentials=AnonymousCredentials())
        client.create_bucket("upm-bucket")
        yield "gs://upm-bucket/prod", servers.gcs_env(endpoint)


@pytest.fixture(scope="module")
def s3():
    with servers.moto_s3() as endpoint, servers.env(servers.s3_env(endpoint)):
        import boto3
        boto3.client("s3").create_bucket(Bucket="upm-bucket")
        yield "s3://upm-bucket/prod", servers.s3_env(endpoint)


@pytest.fixture(params=["gcs", "s3"])
def location(request):
    loc, env = request.getfixturevalue(request.param)
    with servers.env(env):
        yield loc, env


def snap(version, scale=1.0):
    return Snapshot({"snapshot_id": f"acme-v{version:06d}", "tenant_id": "acme", "version": version},
                    {"w": np.arange(8, dtype=np.float32) * scale})


def test_write_read_verify_list(location):
    loc, _ = location
    store = open_store(loc)
    enc = encode(snap(1), "zstd")
    stored = store.write_snapshot("acme", "acme-v000001", enc)
    assert stored.uri.startswith(loc.split("/prod")[0]) and stored.uri.endswith(".upm.zst")
    back = store.read_snapshot(stored.uri, stored.sha256)
    assert np.array_equal(back.arrays["w"], snap(1).arrays["w"])
    assert store.write_snapshot("acme", "acme-v000001", enc) == stored  # idempotent
    with pytest.raises(SnapshotConflict):
        store.write_snapshot("acme", "acme-v000001", encode(snap(1, 2.0), "zstd"))
    with pytest.raises(SnapshotIntegrityError):
        store.read_snapshot(stored.uri, "0" * 64)
    store.write_snapshot("acme", "acme-v000002", encode(snap(2), "gzip"))
    assert [s.snapshot_id for s in store.list_snapshots("acme")] == ["acme-v000001",
                                                                      "acme-v000002"]
    store.delete(stored.uri)
    assert [s.snapshot_id for s in store.list_snapshots()] == ["acme-v000002"]


def test_registry_round_trip(location):
    loc, _ = location
    reg = open_registry(loc + "-reg")
    assert reg.read()["generation"] == 0
    reg.register({"snapshot_id": "acme-v000001", "tenant_id": "acme", "uri": "x", "sha256": "h",
                  "size_bytes": 1, "format": "f", "compression": "zstd", "version": 1})
    assert reg.read()["generation"] == 1 and reg.artifact("acme", "acme-v000001")["sha256"] == "h"



def test_register_many_is_one_update_and_all_or_none(location):
    loc, _ = location
    reg = open_registry(loc + "-many")

    def rec(i, sha):
        return {"snapshot_id": f"acme-v{i:06d}", "tenant_id": "acme", "uri": f"u{i}",
                "sha256": sha, "size_bytes": 1, "format": "f", "compression": "zstd",
                "version": i}
    assert reg.register_many([rec(i, f"h{i}") for i in range(1, 51)]) == [True] * 50
    doc = reg.read()
    assert doc["generation"] == 1 and len(doc["tenants"]["acme"]["artifacts"]) == 50
    assert reg.register_many([rec(50, "h50"), rec(51, "h51")]) == [False, True]
    with pytest.raises(ValueError, match="already registered"):
        reg.register_many([rec(52, "h52"), rec(3, "other")])
    doc = reg.read()
    assert doc["generation"] == 2 and "acme-v000052" not in doc["tenants"]["acme"]["artifacts"]
    assert reg.register_many([]) == [] and reg.read()["generation"] == 2

WRITER = textwrap.dedent("""
    import sys
    from model.lifecycle.registry import Registry, open_documents
    from tests.core.collide import FirstReadBarrier
    loc, who, n, barrier = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    reg = Registry(FirstReadBarrier(open_documents(loc), barrier, who))
    for i in range(n):
        reg.register({"snapshot_id": f"{who}-v{i:06d}", "tenant_id": "acme", "uri": "u",
                      "sha256": f"{who}{i}", "size_bytes": 1, "format": "f",
                      "compression": "zstd", "version": i})
    print("conflicts", reg.conflicts)
""")


@pytest.mark.parametrize("round_", range(3))
def test_two_concurrent_writers_lose_no_update(location, tmp_path, round_):
    loc, env = location
    loc = f"{loc}-cas{round_}"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    import os
    procs = [subprocess.Popen([sys.executable, str(script), loc, w, "15", str(tmp_path / "go")],
                              cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
             for w in ("a", "b")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # both read generation 0 before either wrote, so at least one write lost and was retried
    assert sum(int(o.split("conflicts")[-1]) for o in outs) >= 1, outs
    doc = open_registry(loc).read()
    arts = doc["tenants"]["acme"]["artifacts"]
    assert len(arts) == 30 and doc["generation"] == 30
    assert [h["action"] for h in doc["tenants"]["acme"]["history"]].count("register") == 30
