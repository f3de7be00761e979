"""The registry: one JSON document per store root, the single source of truth for which snapshot
each stage of each tenant points to (DESIGN §5, seeds 003/004).

Document (`<store root>/registry/models.json`):

    {"schema": 1, "generation": 17, "tenants": {"acme": {
        "stages": {"staging": id|null, "shadow": ..., "canary": ..., "active": ...},
        "stage_since": {"shadow": ms, ...},          when each pointer last moved
        "previous": {"active": [older ids...], ...}, earlier pointers of each stage (rollback)
        "artifacts": {id: {uri, sha256, size_bytes, format, compression, signature,
                           lineage: {tenant_id, trainer_id, version, mode, window_start,
                                     window_end, parent_snapshot_id},
                           metrics: {loss, drift_p95, drift_samples, and the prequential
                           scores of the snapshot's interval: n, accuracy, log_loss, brier,
                           mae, rmse (state/prequential.py)},
                           registered_at, quarantined: bool}},
        "quarantine": {...} | null,
        "drift_trend": [[window_end ms, p95, samples, snapshot_id, level, raise_at, rule], ...],
                       the last 1000 (level, raise_at, rule: what the drift rule judged;
                       absent from points written before they were recorded)
        "adoption": {adapter_id: {stage, snapshot_id, version, adopted_at, failures, ...}},
        "history": [{timestamp, action, from_stage, to_stage, artifact_id, actor, reason}, ...]}}}

Writers never lose each other's updates: every change is a pure function applied to the latest
document and written back with compare-and-swap, retried on conflict. Each backend's `read()`
returns the document and a token, and `write(doc, token)` succeeds only if the stored document
is still the one that token names: locally the document's `generation` checked under an
exclusive `flock` before an atomic rename; on GCS the object generation (`if_generation_match`);
on S3 the ETag (`If-Match`, or `If-None-Match: *` for the first write).

Code outside this module reads and changes a tenant's entry through `TenantView` (and its
`Artifact`s), never by indexing the document: `Registry.view` to read, `tenant_view(doc, t)`
inside an `update`.

The document is written compact (no indentation): `json` encodes that in C, ten times faster
than indented output, and every change rewrites the whole document. `upm registry` prints it.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from model.lifecycle.store import by_scheme

STAGES = ("staging", "shadow", "canary", "active")
TREND_POINTS = 1000
SCHEMA = 1


def dump_document(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


class RegistryConflict(RuntimeError):
    """The document changed between read and write (another writer won); retry."""


def empty_document() -> dict:
    return {"schema": SCHEMA, "generation": 0, "tenants": {}}


def tenant_entry(doc: dict, tenant: str) -> dict:
    return doc["tenants"].setdefault(tenant, {
        "stages": {s: None for s in STAGES}, "stage_since": {}, "previous": {s: [] for s in STAGES},
        "artifacts": {}, "quarantine": None, "adoption": {}, "history": []})


def tenant_view(doc: dict, tenant: str) -> "TenantView":
    """The tenant's entry of a document being changed (inside `Registry.update`), created if
    new."""
    return TenantView(tenant, tenant_entry(doc, tenant))


@dataclass(frozen=True)
class Artifact:
    """One registered snapshot, as the registry knows it (read-only; the document holds it)."""

    id: str
    uri: str
    sha256: str
    signature: str | None
    version: int
    mode: str | None
    window_start: int | None
    window_end: int | None
    metrics: dict
    created_at: int | None  # event time of the snapshot's cut
    registered_at: int | None
    quarantined: bool
    rolled_back: bool
    head: str | None = None  # None: registered before heads were recorded

    @classmethod
    def of(cls, artifact_id: str, entry: dict) -> "Artifact":
        lineage = entry["lineage"]
        return cls(artifact_id, entry["uri"], entry["sha256"], entry.get("signature"),
                   lineage.get("version") or 0, lineage.get("mode"), lineage.get("window_start"),
                   lineage.get("window_end"), entry["metrics"], entry.get("created_at"),
                   entry.get("registered_at"), bool(entry.get("quarantined")),
                   bool(entry.get("rolled_back")), lineage.get("head"))

    @property
    def good(self) -> bool:
        """Neither quarantined nor rolled back: a stage may return to it."""
        return not (self.quarantined or self.rolled_back)


class TenantView:
    """One tenant's entry of the registry document, read and changed through named operations,
    so no caller indexes the document. It wraps the entry itself: inside `Registry.update` its
    changes are written back with the document; on `Registry.view` it is a private copy."""

    def __init__(self, tenant_id: str, entry: dict):
        self.tenant_id = tenant_id
        self._e = entry

    # -- reads -----------------------------------------------------------------------------

    def pointer(self, stage: str) -> str | None:
        return self._e["stages"][stage]

    def stages(self) -> dict[str, str | None]:
        return dict(self._e["stages"])

    def since(self, stage: str) -> int | None:
        """When the stage's pointer last moved (ms)."""
        return self._e["stage_since"].get(stage)

    def artifact(self, artifact_id: str | None) -> Artifact | None:
        entry = self._e["artifacts"].get(artifact_id) if artifact_id else None
        return Artifact.of(artifact_id, entry) if entry is not None else None

    def artifacts(self) -> list[Artifact]:
        """Every registered artifact, oldest version first."""
        arts = [Artifact.of(k, v) for k, v in self._e["artifacts"].items()]
        return sorted(arts, key=lambda a: (a.version, a.id))

    def newest(self) -> Artifact | None:
        """The artifact with the highest version."""
        arts = self.artifacts()
        return arts[-1] if arts else None

    def known_good(self, stage: str, besides: str | None = None) -> str | None:
        """The stage's most recent earlier pointer that is good (and is not `besides`): where a
        rollback returns it, and what retention never deletes."""
        at = self._known_good_at(stage, besides)
        return None if at is None else self._e["previous"][stage][at]

    def _known_good_at(self, stage: str, besides: str | None) -> int | None:
        previous = self._e["previous"].get(stage, [])
        for i in range(len(previous) - 1, -1, -1):
            a = self.artifact(previous[i])
            if previous[i] != besides and a is not None and a.good:
                return i
        return None

    def holding(self, artifact_id: str, below: str) -> str | None:
        """The nearest stage below `below` that points to the artifact."""
        for s in reversed(STAGES[:STAGES.index(below)]):
            if self._e["stages"][s] == artifact_id:
                return s
        return None

    @property
    def quarantine(self) -> dict | None:
        return self._e["quarantine"]

    @property
    def history(self) -> list[dict]:
        return list(self._e["history"])

    @property
    def adoption(self) -> dict[str, dict]:
        return dict(self._e["adoption"])

    @property
    def drift_trend(self) -> list[list]:
        return list(self._e.get("drift_trend", []))

    def retired(self, artifact_id: str) -> dict | None:
        return self._e.get("retired", {}).get(artifact_id)

    # -- changes (inside Registry.update) ----------------------------------------------------

    def point(self, stage: str, artifact_id: str, now_ms: int) -> str | None:
        """Point `stage` at the artifact, remembering the old pointer. Returns the old one."""
        old = self._e["stages"][stage]
        if old:
            self._e["previous"][stage].append(old)
        self._e["stages"][stage] = artifact_id
        self._e["stage_since"][stage] = now_ms
        return old

    def roll_back(self, stage: str, now_ms: int) -> tuple[str, str] | None:
        """Point `stage` back at its known-good, marking the current artifact rolled back and
        clearing the quarantine. Returns (from, to), or None with nothing to return to."""
        cur = self._e["stages"][stage]
        at = self._known_good_at(stage, besides=cur)
        if cur is None or at is None:
            return None
        previous = self._e["previous"][stage]
        target = previous[at]
        del previous[at:]  # the known-good and the bad pointers after it
        self._e["stages"][stage] = target
        self._e["stage_since"][stage] = now_ms
        self._e["artifacts"][cur]["rolled_back"] = True
        self._e["quarantine"] = None
        return cur, target

    def set_quarantine(self, record: dict) -> None:
        """Remember the quarantine and mark the artifact it names."""
        self._e["quarantine"] = dict(record)
        sid = record.get("snapshot_id")
        if sid in self._e["artifacts"]:
            self._e["artifacts"][sid]["quarantined"] = True

    def report_adoption(self, adapter_id: str, **fields) -> dict:
        """Update an adapter's adoption report; returns it."""
        rep = self._e["adoption"].setdefault(adapter_id, {"failures": 0})
        rep.update(fields)
        return rep

    def retire(self, artifact_id: str) -> None:
        """Move the artifact's entry out of `artifacts` into `retired` (retention)."""
        self._e.setdefault("retired", {})[artifact_id] = self._e["artifacts"].pop(artifact_id)

    def append_history(self, event: dict) -> None:
        self._e["history"].append(event)


class LocalDocumentStore:
    """The registry document in a local directory: atomic rename under an exclusive lock."""

    def __init__(self, root: str | os.PathLike):
        self.dir = Path(root) / "registry"
        self.path = self.dir / "models.json"

    @contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "models.json.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> tuple[dict, int]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            doc = empty_document()
        return doc, doc["generation"]

    def write(self, doc: dict, token: int) -> None:
        with self._locked():
            _, current = self.read()
            if current != token:
                raise RegistryConflict(f"registry generation is {current}, expected {token}")
            fd, tmp = tempfile.mkstemp(prefix=".models-", dir=self.dir)
            with os.fdopen(fd, "w") as f:
                f.write(dump_document(doc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


class GcsDocumentStore:
    """The registry document as a GCS object, written with `if_generation_match`."""

    def __init__(self, location: str, client=None):
        from google.cloud import storage

        rest = location[len("gs://"):]
        self.bucket_name, _, prefix = rest.partition("/")
        self.key = "/".join(x for x in (prefix.strip("/"), "registry/models.json") if x)
        self.bucket = (client or storage.Client()).bucket(self.bucket_name)

    def read(self) -> tuple[dict, int]:
        blob = self.bucket.get_blob(self.key)
        if blob is None:
            return empty_document(), 0
        return json.loads(blob.download_as_bytes(if_generation_match=blob.generation)), blob.generation

    def write(self, doc: dict, token: int) -> None:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self.key).upload_from_string(
                dump_document(doc), content_type="application/json",
                if_generation_match=token)
        except PreconditionFailed:
            raise RegistryConflict(f"gs://{self.bucket_name}/{self.key} changed") from None


class S3DocumentStore:
    """The registry document as an S3 object, written with `If-Match` on its ETag."""

    def __init__(self, location: str, client=None):
        import boto3

        rest = location[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        self.key = "/".join(x for x in (prefix.strip("/"), "registry/models.json") if x)
        self.client = client or boto3.client("s3")

    def read(self) -> tuple[dict, str | None]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return empty_document(), None
            raise
        return json.loads(obj["Body"].read()), obj["ETag"]

    def write(self, doc: dict, token: str | None) -> None:
        from botocore.exceptions import ClientError

        cond = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key,
                                   Body=dump_document(doc).encode(),
                                   ContentType="application/json", **cond)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "412",
                                               "ConditionalRequestConflict"):
                raise RegistryConflict(f"s3://{self.bucket}/{self.key} changed") from None
            raise


def open_documents(location: str):
    return by_scheme(location, LocalDocumentStore, GcsDocumentStore, S3DocumentStore)


def open_registry(location: str, clock: Callable[[], float] = time.time) -> "Registry":
    """The registry of the store at `location` (a path, gs://bucket/prefix or s3://...)."""
    return Registry(open_documents(location), clock=clock)


class Registry:
    def __init__(self, documents, clock: Callable[[], float] = time.time, max_attempts: int = 100):
        self.documents = documents
        self.clock = clock
        self.max_attempts = max_attempts
        self.conflicts = 0  # writes that lost a compare-and-swap and were retried

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def read(self) -> dict:
        return self.documents.read()[0]

    def update(self, change: Callable[[dict], object]):
        """Apply `change(doc)` (mutating a copy) with compare-and-swap; retry on conflict.
        Returns what `change` returned. `change` may raise to abort with nothing written."""
        for attempt in range(self.max_attempts):
            doc, token = self.documents.read()
            work = copy.deepcopy(doc)
            result = change(work)
            if work == doc:
                return result
            work["generation"] = doc["generation"] + 1
            try:
                self.documents.write(work, token)
                return result
            except RegistryConflict:
                self.conflicts += 1
                time.sleep(min(0.05, 0.001 * (2 ** min(attempt, 6))))
        raise RegistryConflict(f"gave up after {self.max_attempts} conflicting attempts")

    # -- queries ---------------------------------------------------------------------------

    def tenant(self, tenant: str) -> dict | None:
        """The tenant's raw entry (for printing the document); code reads `view`."""
        return self.read()["tenants"].get(tenant)

    def view(self, tenant: str) -> TenantView | None:
        """The tenant's entry as read now, or None if it has none."""
        t = self.tenant(tenant)
        return TenantView(tenant, t) if t is not None else None

    def views(self) -> dict[str, TenantView]:
        """Every tenant's entry as read now (one read), by tenant id."""
        return {t: TenantView(t, e) for t, e in sorted(self.read()["tenants"].items())}

    def event(self, action: str, from_stage: str | None, to_stage: str | None,
              artifact_id: str | None, actor: str, reason: str, **extra) -> dict:
        """A history entry stamped with the registry's clock (`TenantView.append_history`)."""
        return {"timestamp": self.now_ms(), "action": action, "from_stage": from_stage,
                "to_stage": to_stage, "artifact_id": artifact_id, "actor": actor,
                "reason": reason, **extra}

    def pointer(self, tenant: str, stage: str) -> str | None:
        t = self.tenant(tenant)
        return t["stages"][stage] if t else None

    def artifact(self, tenant: str, artifact_id: str) -> dict | None:
        t = self.tenant(tenant)
        return t["artifacts"].get(artifact_id) if t else None

    # -- artifacts -------------------------------------------------------------------------

    def register(self, record: dict) -> bool:
        """Register a snapshot record (`ai.upm.snapshot.created` fields). Idempotent; a second
        record with the same id but another sha256 is refused. Returns True if new."""
        return self.register_many([record])[0]

    def register_many(self, records: list[dict]) -> list[bool]:
        """`register` of many records, in order, in one registry update (all or none)."""
        def change(doc):
            return [self._register(doc, r) for r in records]
        return self.update(change) if records else []

    def _register(self, doc: dict, record: dict) -> bool:
        t = tenant_entry(doc, record["tenant_id"])
        sid = record["snapshot_id"]
        old = t["artifacts"].get(sid)
        if old is not None:
            if old["sha256"] != record["sha256"]:
                raise ValueError(f"{sid} is already registered with sha256 {old['sha256']}, "
                                 f"refusing {record['sha256']}")
            return False
        t["artifacts"][sid] = {
            "uri": record["uri"], "sha256": record["sha256"],
            "size_bytes": record["size_bytes"], "format": record["format"],
            "compression": record["compression"], "signature": record.get("signature"),
            "lineage": {k: record.get(k) for k in (
                "tenant_id", "trainer_id", "version", "mode", "window_start", "window_end",
                "parent_snapshot_id", "windows_trained", "head")},
            "metrics": {"loss": record.get("loss"), "drift_p95": None, "drift_samples": 0,
                        **(record.get("scores") or {})},
            "created_at": record.get("created_at"), "registered_at": self.now_ms(),
            "quarantined": False}
        t["history"].append(self.event("register", None, None, sid, "upm-stream",
                                        f"snapshot v{record['version']} created"))
        challenge = record.get("challenge")
        if challenge and challenge.get("candidate_snapshot_id") in t["artifacts"]:
            # the comparison is the candidate's (the parent), made on this snapshot's windows
            t["artifacts"][challenge["candidate_snapshot_id"]]["metrics"]["challenge"] = challenge
        return True

    def record_drift(self, tenant: str, snapshot_id: str | None, p95: float, samples: int,
                     window_end: int | None = None, level: float | None = None,
                     raise_at: float | None = None, rule: str | None = None) -> None:
        """Latest drift p95 and sample count measured for predictions of `snapshot_id`, and a
        point of the tenant's drift trend (the last TREND_POINTS evaluations): with what the
        drift rule judged (`level`) and the level that raises a quarantine (`raise_at`)."""
        self.record_drift_many([(tenant, snapshot_id, p95, samples, window_end, level, raise_at,
                                 rule)])

    def record_drift_many(self, points: list[tuple]) -> None:
        """`record_drift` of many (tenant, snapshot_id, p95, samples, window_end, level,
        raise_at, rule) points, in order, in one registry update."""
        def change(doc):
            for tenant, snapshot_id, p95, samples, window_end, *judged in points:
                t = tenant_entry(doc, tenant)
                a = t["artifacts"].get(snapshot_id) if snapshot_id else None
                if a is not None:
                    a["metrics"]["drift_p95"] = p95
                    a["metrics"]["drift_samples"] = samples
                if window_end is not None:
                    trend = t.setdefault("drift_trend", [])
                    trend.append([window_end, p95, samples, snapshot_id, *judged])
                    del trend[:-TREND_POINTS]
        if points:
            self.update(change)

