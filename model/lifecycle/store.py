"""Snapshot stores: where encoded snapshots live, chosen by location: a path (local directory),
`gs://bucket/prefix` (Google Cloud Storage) or `s3://bucket/prefix` (S3).

Layout under the store root (the registry document lives beside, in `<root>/registry/`):

    <root>/snapshots/<tenant_id>/<snapshot_id><ext>   the encoded snapshot (ext by compression)
    <root>/snapshots/<tenant_id>/<snapshot_id>.json   its sidecar: id, sha256, size, format, ...

Writes are create-only and atomic in every backend: local files are written to a temporary
name, fsynced and hard-linked into place (link fails if the name exists); GCS uploads carry
`if_generation_match=0`; S3 puts carry `If-None-Match: *`. Writing a name that already holds
identical bytes succeeds (a job replaying after a restart); different bytes raise
SnapshotConflict and the stored version is kept.

Emulators and other endpoints come from the clients' own settings: STORAGE_EMULATOR_HOST for
google-cloud-storage, AWS_ENDPOINT_URL(_S3) and the AWS_* credentials for boto3.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
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


class SnapshotStore:
    """Snapshot-level operations over four byte primitives each backend provides:
    `_create(relpath, data) -> bool` (False if it exists), `get_bytes(uri)`, `uri(relpath)`,
    `_list(prefix) -> relpaths`, `delete(uri)`."""

    def put_bytes(self, relpath: str, data: bytes) -> str:
        """Create `relpath` with `data`; idempotent for identical bytes."""
        if not self._create(relpath, data):
            existing = self.get_bytes(self.uri(relpath))
            if existing != data:
                raise SnapshotConflict(
                    f"{self.uri(relpath)} already holds different bytes (sha256 "
                    f"{sha256_hex(existing)}, refusing {sha256_hex(data)})")
        return self.uri(relpath)

    def write_snapshot(self, tenant_id: str, snapshot_id: str, enc: EncodedSnapshot) -> StoredSnapshot:
        rel = f"snapshots/{tenant_id}/{snapshot_id}{EXTENSIONS[enc.compression]}"
        uri = self.put_bytes(rel, enc.data)
        stored = StoredSnapshot(snapshot_id, tenant_id, uri, enc.sha256, enc.size_bytes,
                                enc.compression, enc.format)
        sidecar = json.dumps(asdict(stored), sort_keys=True, indent=1).encode()
        self.put_bytes(f"snapshots/{tenant_id}/{snapshot_id}.json", sidecar)
        return stored

    def read_snapshot(self, uri: str, sha256: str) -> Snapshot:
        return decode(self.get_bytes(uri), sha256)

    def list_snapshots(self, tenant_id: str | None = None) -> list[StoredSnapshot]:
        prefix = f"snapshots/{tenant_id}/" if tenant_id else "snapshots/"
        out = []
        for rel in sorted(self._list(prefix)):
            if rel.endswith(".json"):
                out.append(StoredSnapshot(**json.loads(self.get_bytes(self.uri(rel)))))
        return out

    def exists(self, uri: str) -> bool:
        try:
            self.get_bytes(uri)
            return True
        except (OSError, KeyError):
            return False

    def _sidecar_of(self, uri: str) -> str:
        head = uri.split(".upm")[0]
        return head + ".json"


class LocalSnapshotStore(SnapshotStore):
    """A directory. Its URIs are paths relative to the root (`snapshots/acme/x.upm.zst`), so a
    store copied or moved elsewhere keeps working; absolute `file://` URIs written by earlier
    versions are read by their `snapshots/...` tail when they point outside the root."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def _path(self, uri_or_path: str) -> Path:
        p = uri_or_path[len("file://"):] if uri_or_path.startswith("file://") else uri_or_path
        path = Path(p)
        if not path.is_absolute():
            path = self.root / path
        path = path.resolve()
        if self.root not in path.parents and path != self.root:
            parts = path.parts
            if path.is_absolute() and "snapshots" in parts:  # an old absolute URI, store moved
                tail = parts[len(parts) - 1 - parts[::-1].index("snapshots"):]
                return self._path(str(Path(*tail)))
            raise ValueError(f"{uri_or_path!r} is outside the store root {self.root}")
        return path

    def uri(self, relpath: str) -> str:
        return self._path(relpath).relative_to(self.root).as_posix()

    def path_of(self, uri: str) -> Path:
        """The file a URI of this store names (relative, or an old absolute `file://`)."""
        return self._path(uri)

    def _create(self, relpath: str, data: bytes) -> bool:
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
                return False
        finally:
            os.unlink(tmp)
        return True

    def get_bytes(self, uri: str) -> bytes:
        return self._path(uri).read_bytes()

    def delete(self, uri: str) -> None:
        """Remove a snapshot and its sidecar (retention)."""
        self._path(uri).unlink(missing_ok=True)
        self._path(self._sidecar_of(uri)).unlink(missing_ok=True)

    def _list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        return [str(p.relative_to(self.root)) for p in base.rglob("*")
                if p.is_file() and not p.name.startswith(".")]


def _split(location: str, scheme: str) -> tuple[str, str]:
    rest = location[len(scheme):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{location!r} names no bucket")
    return bucket, prefix.strip("/")


class GcsSnapshotStore(SnapshotStore):
    def __init__(self, location: str, client=None):
        from google.cloud import storage

        self.bucket_name, self.prefix = _split(location, "gs://")
        self.client = client or storage.Client()
        self.bucket = self.client.bucket(self.bucket_name)

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def uri(self, relpath: str) -> str:
        return f"gs://{self.bucket_name}/{self._key(relpath)}"

    def _blob_of(self, uri: str):
        bucket, key = _split(uri, "gs://")
        if bucket != self.bucket_name:
            raise ValueError(f"{uri} is not in bucket {self.bucket_name}")
        return self.bucket.blob(key)

    def _create(self, relpath: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self._key(relpath)).upload_from_string(data, if_generation_match=0)
            return True
        except PreconditionFailed:
            return False

    def get_bytes(self, uri: str) -> bytes:
        from google.api_core.exceptions import NotFound

        try:
            return self._blob_of(uri).download_as_bytes()
        except NotFound:
            raise FileNotFoundError(uri) from None

    def delete(self, uri: str) -> None:
        from google.api_core.exceptions import NotFound

        for u in (uri, self._sidecar_of(uri)):
            try:
                self._blob_of(u).delete()
            except NotFound:
                pass

    def _list(self, prefix: str) -> list[str]:
        key = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [b.name[cut:] for b in self.client.list_blobs(self.bucket_name, prefix=key)]


class S3SnapshotStore(SnapshotStore):
    def __init__(self, location: str, client=None):
        import boto3

        self.bucket_name, self.prefix = _split(location, "s3://")
        self.client = client or boto3.client("s3")

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def uri(self, relpath: str) -> str:
        return f"s3://{self.bucket_name}/{self._key(relpath)}"

    def _create(self, relpath: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket_name, Key=self._key(relpath), Body=data,
                                   IfNoneMatch="*")
            return True
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "412",
                                               "ConditionalRequestConflict"):
                return False
            raise

    def get_bytes(self, uri: str) -> bytes:
        from botocore.exceptions import ClientError

        bucket, key = _split(uri, "s3://")
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                raise FileNotFoundError(uri) from None
            raise

    def delete(self, uri: str) -> None:
        for u in (uri, self._sidecar_of(uri)):
            bucket, key = _split(u, "s3://")
            self.client.delete_object(Bucket=bucket, Key=key)

    def _list(self, prefix: str) -> list[str]:
        key = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket_name, Prefix=key):
            out += [o["Key"][cut:] for o in page.get("Contents", [])]
        return out


def by_scheme(location: str | os.PathLike, local, gcs, s3):
    """`gcs(loc)` for gs://..., `s3(loc)` for s3://..., else `local(loc)`: the one place a
    store location's scheme is read (snapshot stores, the registry document)."""
    loc = str(location)
    return (gcs if loc.startswith("gs://") else s3 if loc.startswith("s3://") else local)(loc)


def open_store(location: str | os.PathLike) -> SnapshotStore:
    """The snapshot store rooted at `location`: a path, gs://bucket/prefix or s3://bucket/prefix."""
    return by_scheme(location, LocalSnapshotStore, GcsSnapshotStore, S3SnapshotStore)
