"""The snapshot format: a model's arrays plus a manifest, in one deterministic, compressed blob.

Layout before compression (format `upm-snap-v1`):

    b"UPMSNAP1" | u32 little-endian manifest length | manifest JSON (UTF-8, sorted keys)
    | the arrays' raw little-endian bytes, in manifest["arrays"] order

manifest["arrays"] lists name, dtype, shape, offset and nbytes of each array. The blob is then
compressed with zstd (level 3), gzip (mtime 0) or nothing. Encoding is a pure function of the
content: the same model gives the same bytes, which is what lets a store refuse to replace a
version with *different* bytes while accepting an identical rewrite after a job restart.

The sha256 is over the exact stored (compressed) bytes; decoding checks it first and refuses a
mismatch with SnapshotIntegrityError.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

FORMAT = "upm-snap-v1"
MAGIC = b"UPMSNAP1"
COMPRESSIONS = ("zstd", "gzip", "none")
EXTENSIONS = {"zstd": ".upm.zst", "gzip": ".upm.gz", "none": ".upm"}


class SnapshotIntegrityError(ValueError):
    """Stored bytes do not match their recorded sha256, or are not a snapshot at all."""


@dataclass(frozen=True)
class Snapshot:
    manifest: dict
    arrays: dict[str, np.ndarray]

    @property
    def snapshot_id(self) -> str:
        return self.manifest["snapshot_id"]


@dataclass(frozen=True)
class EncodedSnapshot:
    data: bytes
    sha256: str
    compression: str
    format: str = FORMAT

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode(snap: Snapshot, compression: str = "zstd") -> EncodedSnapshot:
    if compression not in COMPRESSIONS:
        raise ValueError(f"snapshots.compression must be one of {COMPRESSIONS}, got {compression!r}")
    index, chunks, offset = [], [], 0
    for name in sorted(snap.arrays):
        a = np.ascontiguousarray(snap.arrays[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        raw = a.tobytes()
        index.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape),
                      "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    manifest = dict(snap.manifest, format=FORMAT, arrays=index)
    head = json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    plain = MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)
    if compression == "zstd":
        data = zstandard.ZstdCompressor(level=3).compress(plain)
    elif compression == "gzip":
        data = gzip.compress(plain, compresslevel=6, mtime=0)
    else:
        data = plain
    return EncodedSnapshot(data=data, sha256=sha256_hex(data), compression=compression)


def _decompress(data: bytes) -> bytes:
    if data.startswith(MAGIC):
        return data
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompress(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    raise SnapshotIntegrityError("not a snapshot: unknown header (expected zstd, gzip or UPMSNAP1)")


def decode(data: bytes, expected_sha256: str | None) -> Snapshot:
    """Decode stored bytes. With `expected_sha256`, refuse bytes that do not hash to it."""
    if expected_sha256 is not None:
        actual = sha256_hex(data)
        if actual != expected_sha256:
            raise SnapshotIntegrityError(
                f"sha256 mismatch: stored bytes hash to {actual}, expected {expected_sha256}")
    try:
        plain = _decompress(data)
    except (OSError, EOFError, zstandard.ZstdError) as e:
        raise SnapshotIntegrityError(f"cannot decompress snapshot: {e}") from None
    if not plain.startswith(MAGIC):
        raise SnapshotIntegrityError("not a snapshot: missing UPMSNAP1 magic")
    (n,) = struct.unpack_from("<I", plain, len(MAGIC))
    start = len(MAGIC) + 4
    manifest = json.loads(plain[start:start + n])
    body = memoryview(plain)[start + n:]
    arrays = {}
    for e in manifest["arrays"]:
        chunk = body[e["offset"]:e["offset"] + e["nbytes"]]
        arrays[e["name"]] = np.frombuffer(chunk, dtype=np.dtype(e["dtype"])).reshape(e["shape"]).copy()
    return Snapshot(manifest=manifest, arrays=arrays)


def snapshot_id_for(tenant_id: str, version: int) -> str:
    return f"{tenant_id}-v{version:06d}"
