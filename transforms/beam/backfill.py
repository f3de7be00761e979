"""Beam steps of the backfill: thin wrappers around `state/backfill.py` and `transforms/publish.py`.

Counters (Beam metrics, namespace `upm.backfill` for the run and `upm.backfill.tenant.<id>` per
tenant) carry the accounting: rows = windows + feedback + dead_letters, and per tenant
windows = out_of_range + duplicates + unlabeled + label_refused + trained + refused (the
label_refused rows are dead letters too, with their reason).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from model.lifecycle.registry import open_registry
from state import backfill
from state.config import UpmConfig
from state.parse import dead_letter
from state.records import DriftScore, FeatureWindow, ms_to_rfc3339
from state.stats import trainer_stats
from state.trainer import TrainerState
from transforms.publish import SnapshotPublisher, warm_start

NAMESPACE = "upm.backfill"


def tenant_namespace(tenant_id: str) -> str:
    return f"{NAMESPACE}.tenant.{tenant_id}"


def _time(ms: int | None) -> str:
    return "?" if ms is None else ms_to_rfc3339(ms)


class SplitInvalid(beam.DoFn):
    """Window table -> its valid rows (main) and a DeadLetter JSON line per invalid row."""

    def __init__(self):
        self.rows = Metrics.counter(NAMESPACE, "rows")
        self.dead = Metrics.counter(NAMESPACE, "dead_letters")

    def process(self, batch: pa.RecordBatch):
        self.rows.inc(batch.num_rows)
        bad = pc.is_valid(batch.column("error"))
        n_bad = pc.sum(bad).as_py() or 0
        if n_bad:
            self.dead.inc(n_bad)
            now = int(time.time() * 1000)
            invalid = batch.filter(bad)
            for raw, reason in zip(invalid.column("raw").to_pylist(),
                                   invalid.column("error").to_pylist()):
                dl = dead_letter(raw, reason, "backfill", now)
                if dl.tenant_id:
                    Metrics.counter(tenant_namespace(dl.tenant_id), "dead_letters").inc()
                yield beam.pvalue.TaggedOutput("dead_letters", dl.to_json())
        if n_bad < batch.num_rows:
            yield batch.filter(pc.invert(bad)) if n_bad else batch


def key_by_tenant(batch: pa.RecordBatch):
    """A valid window table -> (tenant_id, that tenant's rows) for each tenant in it."""
    coded = batch.column("tenant_id").dictionary_encode()
    codes = np.asarray(coded.indices)
    order = np.argsort(codes, kind="stable")  # one pass, however many tenants share the batch
    for rows in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
        if len(rows):
            yield coded.dictionary[codes[rows[0]]].as_py(), batch.take(pa.array(rows))


class TrainTenant(beam.DoFn):
    """(tenant, its row batches) -> trained snapshots, published and registered (main output:
    SnapshotRecord JSON), with `drift_scores`, `duplicates`, `gaps` and `stats` outputs."""

    def __init__(self, config: UpmConfig, store_location: str, start_ms: int | None,
                 end_ms: int | None, warm_start: bool, chunk_rows: int = 16384,
                 register_every_s: float = 1.0):
        self.config, self.store_location = config, store_location
        self.register_every_s = register_every_s
        self.start_ms, self.end_ms = start_ms, end_ms
        self.warm_start, self.chunk_rows = warm_start, chunk_rows

    def setup(self):
        cfg = self.config.snapshots
        self.publisher = SnapshotPublisher(self.store_location, cfg.compression)
        self.registry = open_registry(self.store_location)

    def process(self, element):
        tenant, batches = element
        cfg = self.config.for_tenant(tenant)
        table = pa.Table.from_batches(list(batches))
        prepared = backfill.prepare(tenant, table, self.start_ms, self.end_ms,
                                    cfg.replay.gap_tolerance_ms)
        for d in prepared.duplicates:
            yield beam.pvalue.TaggedOutput("duplicates", d.to_json())
        for g in prepared.gaps:
            yield beam.pvalue.TaggedOutput("gaps", g.to_json())
        trainer = TrainerState(tenant, cfg.model, dataclasses.replace(cfg.trainer, mode="backfill"))
        refusal = self._continue_from_store(trainer, prepared) if prepared.rows.num_rows else None
        if refusal:
            print(f"[backfill] {tenant}: REFUSED: {refusal}", file=sys.stderr, flush=True)
            yield beam.pvalue.TaggedOutput("refusals", json.dumps(
                {"event": "upm.backfill.refused", "tenant_id": tenant, "reason": refusal,
                 "windows": prepared.rows.num_rows}))
            backfill.refuse(prepared)
        yield from self._label_refusals(backfill.choose_head(prepared, trainer))
        started = time.time()
        snaps, drifts, flushed = [], [], time.monotonic()
        for item in backfill.train(prepared, trainer, self.chunk_rows, self._progress(started)):
            (drifts if isinstance(item, DriftScore) else snaps).append(item)
            if time.monotonic() - flushed >= self.register_every_s:
                yield from self._register(tenant, snaps, drifts)
                flushed = time.monotonic()
        yield from self._register(tenant, snaps, drifts)
        print(f"[backfill] {tenant}: done, {prepared.counters['trained']} windows trained, "
              f"{prepared.counters['snapshots']} snapshot(s), now at v{trainer.version}",
              file=sys.stderr, flush=True)
        for name, value in prepared.counters.items():
            Metrics.counter(tenant_namespace(tenant), name).inc(value)
            Metrics.counter(NAMESPACE, name).inc(value)
        yield beam.pvalue.TaggedOutput("stats", trainer_stats(trainer))

    @staticmethod
    def _label_refusals(refused: pa.Table):
        """A dead letter per row whose label the tenant's head cannot learn."""
        now = int(time.time() * 1000)
        for r in refused.to_pylist():
            w = FeatureWindow(r["window_id"], r["tenant_id"], r["window_start"], r["window_end"],
                              dict(zip(r["feature_names"], r["feature_values"])), r["label"])
            yield beam.pvalue.TaggedOutput(
                "dead_letters", dead_letter(w.to_json(), r["reason"], "trainer", now).to_json())

    def _register(self, tenant: str, snaps: list, drifts: list):
        """Publish the snapshots cut since the last call and record their drift: one registry
        update for each, whatever their number (each update rewrites the whole registry
        document, so one per snapshot made a long backfill quadratic). Records are emitted
        once registered. Empties both lists."""
        for record in self.publisher.publish_many(snaps):
            yield record.to_json()
        self.registry.record_drift_many([(tenant, d.snapshot_id, d.drift_p95, d.sample_count,
                                          d.window_end, d.level, d.raise_at, d.rule)
                                         for d in drifts])
        for d in drifts:
            yield beam.pvalue.TaggedOutput("drift_scores", d.to_json())
        snaps.clear()
        drifts.clear()

    def _continue_from_store(self, trainer: TrainerState, prepared: backfill.Prepared
                             ) -> str | None:
        """Warm start the trainer if the store has a snapshot to continue from; the reason to
        refuse the tenant if the store has snapshots this range cannot continue."""
        first_end = int(np.min(np.asarray(prepared.rows.column("window_end"))))
        t = self.registry.view(trainer.tenant_id)
        newest = t.newest() if t else None
        sid = warm_start(self.store_location, trainer, first_end) if self.warm_start else None
        if sid:
            print(f"[backfill] {trainer.tenant_id}: continuing from {sid}", file=sys.stderr,
                  flush=True)
        elif newest is not None:
            return (
                f"the store {self.store_location} already has snapshots of it "
                f"(newest v{newest.version}, windows up to "
                f"{_time(newest.window_end)}) and this backfill cannot "
                f"continue from them: its first window ends at {_time(first_end)}"
                + ("" if self.warm_start else " and warm start is off")
                + ", or the model config differs. Back up a range after the newest snapshot, "
                  "or write to another --output")
        return None

    def _progress(self, started: float):
        def show(p: backfill.Progress) -> None:
            pct = 100.0 * p.trained / p.total if p.total else 100.0
            print(f"[backfill] {p.tenant_id}: {p.trained}/{p.total} windows ({pct:5.1f}%)  "
                  f"v{p.version}  loss {p.loss:.4g}  {time.time() - started:.1f}s",
                  file=sys.stderr, flush=True)
        return show
