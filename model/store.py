"""Snapshot stores: where encoded snapshots live. This module has the local-directory store.

Layout under the store root (the registry document lives beside, in `<root>/registry/`):

    <root>/snapshots/<tenant_id>/<snapshot_id><ext>   the encoded snapshot (ext by compression)
    <root>/snapshots/<tenant_id>/<snapshot_id>.json   its sidecar: id, sha256, size, format, ...

Writes are create-only and atomic: bytes go to a temporary file in the same directory, are
fsynced, then hard-linked into place (link fails if the name exists, so two writers cannot both
win). Writing a name that already holds identical bytes succeeds (a job replaying after a
restart); different bytes raise SnapshotConflict and the stored version is kept.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model.snapshot import EXTENSIONS, EncodedSnapshot, Snapshot, decode, sha256_hex


class SnapshotConflict(RuntimeError):
    pass


@dataclass(frozen=True)
class StoredSnapshot:
    snapshot_id: str
    tenant_id: str
    uri: str
    sha256: str
    size_bytes: int
    compression: str
    format: str


class LocalSnapshotStore:
    scheme = "file"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def _path(self, uri_or_path: str) -> Path:
        p = uri_or_path[len("file://"):] if uri_or_path.startswith("file://") else uri_or_path
        path = Path(p)
        if not path.is_absolute():
            path = self.root / path
        path = path.resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"{uri_or_path!r} is outside the store root {self.root}")
        return path

    def uri(self, relpath: str) -> str:
        return (self.root / relpath).as_uri()

    def put_bytes(self, relpath: str, data: bytes) -> str:
        """Create `relpath` with `data` atomically; idempotent for identical bytes."""
        dest = self._path(relpath)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, dest)
            except FileExistsError:
                existing = dest.read_bytes()
                if existing != data:
                    raise SnapshotConflict(
                        f"{dest} already holds different bytes (sha256 {sha256_hex(existing)}, "
                        f"refusing {sha256_hex(data)})") from None
        finally:
            os.unlink(tmp)
        return dest.as_uri()

    def delete(self, uri: str) -> None:
        """Remove a snapshot and its sidecar (retention)."""
        path = self._path(uri)
        path.unlink(missing_ok=True)
        name = path.name.split(".upm")[0]
        (path.parent / f"{name}.json").unlink(missing_ok=True)

    def get_bytes(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def exists(self, uri: str) -> bool:
        return self._path(uri).exists()

    def write_snapshot(self, tenant_id: str, snapshot_id: str, enc: EncodedSnapshot) -> StoredSnapshot:
        rel = f"snapshots/{tenant_id}/{snapshot_id}{EXTENSIONS[enc.compression]}"
        uri = self.put_bytes(rel, enc.data)
        stored = StoredSnapshot(snapshot_id, tenant_id, uri, enc.sha256, enc.size_bytes,
                                enc.compression, enc.format)
        sidecar = json.dumps(stored.__dict__, sort_keys=True, indent=1).encode()
        self.put_bytes(f"snapshots/{tenant_id}/{snapshot_id}.json", sidecar)
        return stored

    def read_snapshot(self, uri: str, sha256: str) -> Snapshot:
        return decode(self.get_bytes(uri), sha256)

    def list_snapshots(self, tenant_id: str | None = None) -> list[StoredSnapshot]:
        base = self.root / "snapshots"
        dirs = [base / tenant_id] if tenant_id else sorted(
            p for p in base.iterdir() if p.is_dir()) if base.exists() else []
        out = []
        for d in dirs:
            for side in sorted(d.glob("*.json")):
                out.append(StoredSnapshot(**json.loads(side.read_text())))
        return out


def open_store(location: str | os.PathLike) -> LocalSnapshotStore:
    """The snapshot store rooted at `location` (a path; object stores come with their own)."""
    loc = str(location)
    if loc.startswith(("gs://", "s3://")):
        raise ValueError(f"object-store snapshot stores are not available in this build: {loc}")
    return LocalSnapshotStore(loc)
