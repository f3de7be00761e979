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
                           metrics: {loss, drift_p95, drift_samples},
                           registered_at, quarantined: bool}},
        "quarantine": {...} | null,
        "drift_trend": [[window_end ms, p95, samples, snapshot_id], ...],  the last 1000
        "adoption": {adapter_id: {stage, snapshot_id, version, adopted_at, failures, ...}},
        "history": [{timestamp, action, from_stage, to_stage, artifact_id, actor, reason}, ...]}}}

Writers never lose each other's updates: every change is a pure function applied to the latest
document and written back with compare-and-swap on `generation`, retried on conflict. The local
backend does the check and the atomic rename under an exclusive `flock`.
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
from pathlib import Path

STAGES = ("staging", "shadow", "canary", "active")
TREND_POINTS = 1000
SCHEMA = 1


class RegistryConflict(RuntimeError):
    """The document changed between read and write (another writer won); retry."""


def empty_document() -> dict:
    return {"schema": SCHEMA, "generation": 0, "tenants": {}}


def tenant_entry(doc: dict, tenant: str) -> dict:
    return doc["tenants"].setdefault(tenant, {
        "stages": {s: None for s in STAGES}, "stage_since": {}, "previous": {s: [] for s in STAGES},
        "artifacts": {}, "quarantine": None, "adoption": {}, "history": []})


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

    def write(self, doc: dict, expected_generation: int) -> None:
        with self._locked():
            _, current = self.read()
            if current != expected_generation:
                raise RegistryConflict(f"registry generation is {current}, expected "
                                       f"{expected_generation}")
            fd, tmp = tempfile.mkstemp(prefix=".models-", dir=self.dir)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


class Registry:
    def __init__(self, documents, clock: Callable[[], float] = time.time, max_attempts: int = 100):
        self.documents = documents
        self.clock = clock
        self.max_attempts = max_attempts

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def read(self) -> dict:
        return self.documents.read()[0]

    def update(self, change: Callable[[dict], object]):
        """Apply `change(doc)` (mutating a copy) with compare-and-swap; retry on conflict.
        Returns what `change` returned. `change` may raise to abort with nothing written."""
        for attempt in range(self.max_attempts):
            doc, gen = self.documents.read()
            work = copy.deepcopy(doc)
            result = change(work)
            if work == doc:
                return result
            work["generation"] = gen + 1
            try:
                self.documents.write(work, gen)
                return result
            except RegistryConflict:
                time.sleep(min(0.05, 0.001 * (2 ** min(attempt, 6))))
        raise RegistryConflict(f"gave up after {self.max_attempts} conflicting attempts")

    # -- queries ---------------------------------------------------------------------------

    def tenant(self, tenant: str) -> dict | None:
        return self.read()["tenants"].get(tenant)

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
        def change(doc):
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
                    "parent_snapshot_id", "windows_trained")},
                "metrics": {"loss": record.get("loss"), "drift_p95": None, "drift_samples": 0},
                "created_at": record.get("created_at"), "registered_at": self.now_ms(),
                "quarantined": False}
            t["history"].append(self._event("register", None, None, sid, "upm-stream",
                                            f"snapshot v{record['version']} created"))
            return True
        return self.update(change)

    def record_drift(self, tenant: str, snapshot_id: str | None, p95: float, samples: int,
                     window_end: int | None = None) -> None:
        """Latest drift p95 and sample count measured for predictions of `snapshot_id`, and a
        point of the tenant's drift trend (the last TREND_POINTS evaluations)."""
        def change(doc):
            t = tenant_entry(doc, tenant)
            a = t["artifacts"].get(snapshot_id) if snapshot_id else None
            if a is not None:
                a["metrics"]["drift_p95"] = p95
                a["metrics"]["drift_samples"] = samples
            if window_end is not None:
                trend = t.setdefault("drift_trend", [])
                trend.append([window_end, p95, samples, snapshot_id])
                del trend[:-TREND_POINTS]
        self.update(change)

    def _event(self, action, from_stage, to_stage, artifact_id, actor, reason, **extra) -> dict:
        return {"timestamp": self.now_ms(), "action": action, "from_stage": from_stage,
                "to_stage": to_stage, "artifact_id": artifact_id, "actor": actor,
                "reason": reason, **extra}
