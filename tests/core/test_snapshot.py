import numpy as np
import pytest

from model.snapshot import SnapshotIntegrityError, Snapshot, decode, encode
from model.lifecycle.store import LocalSnapshotStore, SnapshotConflict


def snap(version=1, scale=1.0):
    return Snapshot(manifest={"snapshot_id": f"acme-v{version:06d}", "tenant_id": "acme",
                              "version": version},
                    arrays={"w": np.arange(12, dtype=np.float32).reshape(3, 4) * scale,
                            "b": np.array([0.5], np.float32), "step": np.array([3], np.int64)})


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_codecs_round_trip_and_are_deterministic(compression):
    enc = encode(snap(), compression)
    assert enc == encode(snap(), compression)
    back = decode(enc.data, enc.sha256)
    assert back.manifest["version"] == 1 and back.manifest["format"] == "upm-snap-v1"
    for k, v in snap().arrays.items():
        assert np.array_equal(back.arrays[k], v) and back.arrays[k].dtype == v.dtype


def test_compression_shrinks_a_sparse_model():
    s = Snapshot({"snapshot_id": "x"}, {"w": np.zeros((256, 64), np.float32)})
    assert encode(s, "zstd").size_bytes < encode(s, "none").size_bytes / 10


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_flipped_byte_is_refused(compression):
    enc = encode(snap(), compression)
    for pos in (0, len(enc.data) // 2, len(enc.data) - 1):
        bad = bytearray(enc.data)
        bad[pos] ^= 0x01
        with pytest.raises(SnapshotIntegrityError, match="sha256 mismatch"):
            decode(bytes(bad), enc.sha256)


def test_store_writes_atomically_and_never_replaces_with_different_bytes(tmp_path):
    store = LocalSnapshotStore(tmp_path)
    enc = encode(snap(), "zstd")
    stored = store.write_snapshot("acme", "acme-v000001", enc)
    assert stored.uri == "snapshots/acme/acme-v000001.upm.zst" and stored.sha256 == enc.sha256
    again = store.write_snapshot("acme", "acme-v000001", enc)  # idempotent rewrite
    assert again == stored
    with pytest.raises(SnapshotConflict):
        store.write_snapshot("acme", "acme-v000001", encode(snap(scale=2.0), "zstd"))
    back = store.read_snapshot(stored.uri, stored.sha256)
    assert np.array_equal(back.arrays["w"], snap().arrays["w"])
    assert [s.snapshot_id for s in store.list_snapshots()] == ["acme-v000001"]
    assert not [p for p in (tmp_path / "snapshots" / "acme").iterdir() if p.name.startswith(".tmp")]


def test_store_refuses_a_tampered_file(tmp_path):
    store = LocalSnapshotStore(tmp_path)
    stored = store.write_snapshot("acme", "acme-v000001", encode(snap(), "gzip"))
    path = tmp_path / "snapshots" / "acme" / "acme-v000001.upm.gz"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotIntegrityError):
        store.read_snapshot(stored.uri, stored.sha256)


def test_store_refuses_paths_outside_its_root(tmp_path):
    store = LocalSnapshotStore(tmp_path / "root")
    with pytest.raises(ValueError, match="outside"):
        store.put_bytes("../escape", b"x")


def test_a_moved_store_reads_relative_and_old_absolute_uris(tmp_path):
    import shutil
    store = LocalSnapshotStore(tmp_path / "a")
    stored = store.write_snapshot("acme", "acme-v000001", encode(snap(), "zstd"))
    old_absolute = (tmp_path / "a" / stored.uri).as_uri()  # what earlier versions registered
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = LocalSnapshotStore(tmp_path / "b")
    for uri in (stored.uri, old_absolute):
        assert np.array_equal(moved.read_snapshot(uri, stored.sha256).arrays["w"],
                              snap().arrays["w"])
    with pytest.raises(ValueError, match="outside"):
        moved.get_bytes((tmp_path / "elsewhere.bin").as_uri())
