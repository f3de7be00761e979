"""Engine-free steps every engine adapter and the backfill share, the ones that do I/O on the
store: publishing a snapshot (encode, write create-only, sign, register, make its record),
governing drift records (measured drift into the registry, quarantines into automatic
rollbacks), warm start and the champion refresh. (They build the stream records of state/, so
they cannot live in model/lifecycle/, a layer below it.)"""

from __future__ import annotations

import dataclasses
import json
import time

from model.lifecycle.governance import Governance, JsonLinesSink, events_path
from model.lifecycle.policy import Policy
from model.lifecycle.registry import open_registry
from model.lifecycle.signing import Signer, Verifier
from model.network import ModelConfig
from model.snapshot import Snapshot, encode
from model.lifecycle.store import SnapshotConflict, open_store
from state.records import SnapshotRecord, rfc3339_to_ms


class SnapshotPublisher:
    def __init__(self, store_location: str, compression: str):
        self.store = open_store(store_location)
        self.registry = open_registry(store_location)
        self.signer = Signer.from_env()
        self.compression = compression

    def publish(self, snap: Snapshot) -> SnapshotRecord:
        return self.publish_many([snap])[0]

    def publish_many(self, snaps: list[Snapshot]) -> list[SnapshotRecord]:
        """Write and sign each snapshot, then register them all in one registry update."""
        records = [self._write(s) for s in snaps]
        self.registry.register_many([dataclasses.asdict(r) for r in records])
        return records

    def _write(self, snap: Snapshot) -> SnapshotRecord:
        m = snap.manifest
        enc = encode(snap, self.compression)
        stored = self.store.write_snapshot(m["tenant_id"], m["snapshot_id"], enc)
        signature = self.signer.sign(m["snapshot_id"], stored.sha256) if self.signer else None
        return SnapshotRecord(
            snapshot_id=m["snapshot_id"], tenant_id=m["tenant_id"], trainer_id=m["trainer_id"],
            version=m["version"], mode=m["mode"], created_at=m["created_at"],
            window_start=m["window_start"], window_end=m["window_end"],
            windows_trained=m["windows_trained"], loss=m["metrics"]["loss"], uri=stored.uri,
            sha256=stored.sha256, size_bytes=stored.size_bytes, format=stored.format,
            compression=stored.compression, signature=signature,
            parent_snapshot_id=m["parent_snapshot_id"], scores=m["metrics"].get("prequential"),
            challenge=m["metrics"].get("challenge"), head=m["model"].get("head"))

    def publish_or_refuse(self, snap: Snapshot) -> tuple[SnapshotRecord | None, str | None]:
        """(record, None), or (None, a `upm.snapshot.refused` record) when the store already
        holds this version with different bytes: another stream's history for this tenant. The
        store keeps its version; the job goes on and says so instead of failing."""
        try:
            return self.publish(snap), None
        except SnapshotConflict as e:
            m = snap.manifest
            return None, json.dumps({
                "event": "upm.snapshot.refused", "tenant_id": m["tenant_id"],
                "snapshot_id": m["snapshot_id"], "version": m["version"],
                "reason": f"the store already holds {m['snapshot_id']} with different bytes "
                          f"(another stream's history for this tenant; use another --output "
                          f"or a stream that continues it): {e}"})


def warm_start(store_location: str, trainer, first_event_time: int) -> str | None:
    """Load a tenant's newest registered snapshot into a fresh TrainerState (weights, optimizer
    slots, version sequence), verifying its sha256, when that snapshot covers only data before
    `first_event_time` (the first record the tenant now sees). Returns the snapshot id, or None.

    The time rule keeps recovery exact: a job restored from a checkpoint in which a tenant had no
    state yet replays that tenant's windows from before any snapshot a failed attempt wrote
    after the checkpoint, so it must not start from those snapshots."""
    t = open_registry(store_location).view(trainer.tenant_id)
    newest = t.newest() if t else None
    if newest is None or (newest.window_end or 0) > first_event_time:
        return None
    snap = open_store(store_location).read_snapshot(newest.uri, newest.sha256)
    if not trainer.model.resolved_as(ModelConfig.from_dict(snap.manifest["model"])):
        return None
    trainer.load_snapshot(snap)
    return newest.id


def first_record(store_location: str, trainer, event_time: int) -> None:
    """What every engine does before a tenant's first record is trained (TenantPipeline's
    `before_first_record`): warm-start a fresh trainer, then read its champion."""
    if trainer.version == 0:
        warm_start(store_location, trainer, event_time)
    refresh_champion(store_location, trainer)


def refresh_champion(store_location: str, trainer) -> None:
    """Tell a tenant's trainer which snapshot its `active` stage points to (read from the
    registry, its bytes sha256-verified), so the trainer scores it and the newest candidate on
    the same windows (state/challenge.py). Engines call it at a tenant's first record and after
    each snapshot the tenant cuts."""
    t = open_registry(store_location).view(trainer.tenant_id)
    active = t.artifact(t.pointer("active")) if t else None
    if (active.id if active else None) == (trainer.champion.snapshot_id if trainer.champion
                                           else None):
        return
    if active is None:
        trainer.set_champion(None)
        return
    trainer.set_champion(open_store(store_location).read_snapshot(active.uri, active.sha256))


class DriftGovernor:
    """Drift records into the registry. Measured drift is written at most once per
    `flush_interval_s` of wall time (one registry update for all the scores since), and always
    before a quarantine is applied and on `close()`: a registry write rewrites the whole
    document, and a job evaluates drift for every tenant every minute of event time."""

    def __init__(self, store_location: str, policy_path: str | None,
                 flush_interval_s: float = 1.0, clock=time.monotonic):
        registry = open_registry(store_location)
        self.gov = Governance(registry, open_store(store_location), Policy.load(policy_path),
                              Verifier.from_env(), JsonLinesSink(events_path(store_location)))
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.pending: list[tuple] = []
        self.last_flush = clock()

    def apply(self, record_json: str) -> list[dict]:
        """Returns the rollback events a quarantine caused."""
        rec = json.loads(record_json)
        if rec["event"] == "upm.drift.score":
            self.pending.append((rec["tenant_id"], rec.get("snapshot_id"), rec["drift_p95"],
                                 rec["sample_count"], rfc3339_to_ms(rec["window_end"]),
                                 rec.get("level"), rec.get("raise_at"), rec.get("rule")))
            if self.clock() - self.last_flush >= self.flush_interval_s:
                self.flush()
        elif rec["event"] == "ai.upm.drift.quarantine":
            self.flush()
            return self.gov.on_quarantine(rec)
        return []

    def flush(self) -> None:
        points, self.pending = self.pending, []
        self.gov.registry.record_drift_many(points)
        self.last_flush = self.clock()

    def close(self) -> None:
        self.flush()
