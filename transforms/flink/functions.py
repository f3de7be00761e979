"""PyFlink functions of the UPM job. Each is a thin translation: Flink keyed state holds the core
object's bytes, Flink event-time timers call the core's time methods, and the core's outputs
become the main output or side outputs (JSON lines). All logic lives in `state/`.

Elements between operators are `(kind, record)` tuples (kind is "window" or "feedback") or
core records, pickled by PyFlink.
"""

from __future__ import annotations

import json
import time

from pyflink.common import Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import (FlatMapFunction, KeyedProcessFunction,
                                          ProcessFunction, RuntimeContext)
from pyflink.datastream.state import ValueStateDescriptor

from state.config import UpmConfig
from state.drift import DriftWindow
from state.parse import dead_letter, last_resort_dead_letter, parse_message
from state.records import Feedback
from transforms.publish import (DriftGovernor, SnapshotPublisher, drift_stats, replay_stats,
                                trainer_stats, warm_start)
from state.replay import ReplayBuffer
from state.trainer import TrainerState
from transforms.flink.metrics import TenantValues

END_OF_INPUT = (1 << 63) - 1  # Flink's final watermark: timers here fire when a bounded input ends

# One side output per record type; all carry JSON text.
DEAD_LETTERS = OutputTag("dead_letters", Types.STRING())
DUPLICATES = OutputTag("duplicates", Types.STRING())
LATE = OutputTag("late", Types.STRING())
GAPS = OutputTag("gaps", Types.STRING())
SHADOW_DELTAS = OutputTag("shadow_deltas", Types.STRING())
SNAPSHOTS = OutputTag("snapshots", Types.PICKLED_BYTE_ARRAY())
DRIFT_SCORES = OutputTag("drift_scores", Types.STRING())
QUARANTINES = OutputTag("quarantines", Types.STRING())
STATS = OutputTag("stats", Types.STRING())
REFUSALS = OutputTag("refusals", Types.STRING())


class Parse(ProcessFunction):
    """JSON text -> ("window"|"feedback", record); anything bad -> DeadLetter side output."""

    def __init__(self, source_name: str, max_features: int):
        self.source_name = source_name
        self.max_features = max_features

    def open(self, runtime_context: RuntimeContext):
        g = runtime_context.get_metrics_group().add_group("upm")
        self.m_in = g.counter("messages_in")
        self.m_dead = g.counter("dead_letters")

    def process_element(self, value, ctx):
        self.m_in.inc()
        try:
            parsed = parse_message(value, self.max_features)
            if parsed.ok:
                rec = parsed.record
                yield ("feedback" if isinstance(rec, Feedback) else "window", rec)
                return
            out = dead_letter(value, parsed.reason, self.source_name, _now_ms()).to_json()
        except Exception as e:  # last resort: no single message may fail the job
            out = last_resort_dead_letter(value, e, self.source_name, _now_ms()).to_json()
        self.m_dead.inc()
        yield DEAD_LETTERS, out


def _now_ms() -> int:
    return int(time.time() * 1000)


class EventTime(TimestampAssigner):
    def extract_timestamp(self, value, record_timestamp) -> int:
        return value[1].event_time


def tenant_of(value) -> str:
    return value[1].tenant_id if isinstance(value, tuple) else value.tenant_id


class _Keyed(KeyedProcessFunction):
    """Shared plumbing: one bytes ValueState per key holding a core object.

    The live objects are also kept in `self.live`, so an element costs one serialization (the
    state update) instead of two. The cache cannot go stale: only this subtask writes its keys'
    state, and after any restore Flink opens a fresh function instance with an empty cache."""

    state_name = ""

    def __init__(self, config: UpmConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext):
        self.state = runtime_context.get_state(
            ValueStateDescriptor(self.state_name, Types.PICKLED_BYTE_ARRAY()))
        self.metrics = runtime_context.get_metrics_group().add_group("upm")
        self.live: dict = {}
        self.tenant_values = TenantValues(self.metrics)

    def _tenant_gauge(self, tenant: str, name: str, value: float) -> None:
        """Push `upm.tenant.<tenant>.<name>` (never a Python gauge: see transforms/flink/metrics)."""
        self.tenant_values.set(tenant, name, value)

    def _load(self, tenant: str):
        obj = self.live.get(tenant)
        if obj is None:
            blob = self.state.value()
            cfg = self.config.for_tenant(tenant)
            obj = self.from_bytes(blob, cfg) if blob else self.new(tenant, cfg)
            self.live[tenant] = obj
        return obj

    def _save(self, obj) -> None:
        self.state.update(obj.to_bytes())


class ReplayBufferFunction(_Keyed):
    state_name = "replay_buffer"

    def new(self, tenant, cfg):
        return ReplayBuffer(tenant, cfg.replay)

    def from_bytes(self, blob, cfg):
        return ReplayBuffer.from_bytes(blob, cfg.replay)

    def open(self, runtime_context):
        super().open(runtime_context)
        self.c = {k: self.metrics.counter(k) for k in
                  ("windows_in", "duplicates", "late", "released", "gaps", "feedback_in",
                   "dead_letters")}

    def process_element(self, value, ctx):
        kind, rec = value
        if kind == "feedback":
            self.c["feedback_in"].inc()
            yield value
            return
        rb = self._load(rec.tenant_id)
        if rb.counters["received"] == 0:
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        self.c["windows_in"].inc()
        out = rb.add(rec)
        nxt = rb.next_release_time()
        if nxt is not None:
            ctx.timer_service().register_event_time_timer(nxt)
        self._save(rb)
        yield from self._emit(out)

    def on_timer(self, timestamp, ctx):
        rb = self._load(ctx.get_current_key())
        out = rb.flush() if timestamp == END_OF_INPUT else rb.advance(timestamp)
        self._save(rb)
        yield from self._emit(out)
        if timestamp == END_OF_INPUT:
            yield STATS, replay_stats(rb)

    def _emit(self, out):
        for w, reason in out.refused:
            self.c["dead_letters"].inc()
            yield DEAD_LETTERS, dead_letter(w.to_json(), reason, "replay", _now_ms()).to_json()
        for d in out.duplicates:
            self.c["duplicates"].inc()
            yield DUPLICATES, d.to_json()
        for late in out.late:
            self.c["late"].inc()
            yield LATE, late.to_json()
        for g in out.gaps:
            self.c["gaps"].inc()
            yield GAPS, g.to_json()
        for w in out.released:
            self.c["released"].inc()
            yield ("window", w)


class TrainerFunction(_Keyed):
    """Test-then-train per tenant. Main output: ShadowDeltas (for the DriftMonitor). A tenant
    with no state yet warm-starts from its newest snapshot in the store, if any."""

    state_name = "trainer"

    def __init__(self, config: UpmConfig, emit_shadow_deltas: bool, store_location: str | None):
        super().__init__(config)
        self.emit_shadow_deltas = emit_shadow_deltas
        self.store_location = store_location

    def new(self, tenant, cfg):
        return TrainerState(tenant, cfg.model, cfg.trainer)

    def from_bytes(self, blob, cfg):
        return TrainerState.from_bytes(blob)

    def open(self, runtime_context):
        super().open(runtime_context)
        self.c = {k: self.metrics.counter(k) for k in ("trained", "snapshots", "steps")}

    def process_element(self, value, ctx):
        kind, rec = value
        ts = self._load(rec.tenant_id)
        if ts.counters["windows"] == 0 and ts.counters["feedback"] == 0:
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            if self.store_location and ts.version == 0:
                warm_start(self.store_location, ts, rec.event_time)
        before = ts.trained
        out = ts.on_feedback(rec) if kind == "feedback" else ts.on_window(rec)
        self._save(ts)
        yield from self._emit(ts, out, before)

    def on_timer(self, timestamp, ctx):
        ts = self._load(ctx.get_current_key())
        before = ts.trained
        out = ts.flush()
        self._save(ts)
        yield from self._emit(ts, out, before)
        yield STATS, trainer_stats(ts)

    def _emit(self, ts, out, before):
        if ts.trained != before:
            self.c["trained"].inc(ts.trained - before)
            self.c["steps"].inc()
            self._tenant_gauge(ts.tenant_id, "loss_micro", ts.last_loss * 1e6)
        for d in out.deltas:
            if self.emit_shadow_deltas:
                yield SHADOW_DELTAS, d.to_json()
            yield d
        for snap in out.snapshots:
            self.c["snapshots"].inc()
            self._tenant_gauge(ts.tenant_id, "snapshot_version", snap.manifest["version"])
            yield SNAPSHOTS, snap


class SnapshotWriter(ProcessFunction):
    """Publish a Snapshot (write create-only and idempotent, sign when UPM_SIGNING_KEY_FILE is
    set, register) and emit its record; a version the store holds with other bytes is refused
    (REFUSALS side output) and the job goes on."""

    def __init__(self, store_location: str, compression: str):
        self.store_location = store_location
        self.compression = compression

    def open(self, runtime_context: RuntimeContext):
        self.publisher = SnapshotPublisher(self.store_location, self.compression)
        g = runtime_context.get_metrics_group().add_group("upm")
        self.written = g.counter("snapshots_written")
        self.bytes = g.counter("snapshot_bytes")
        self.refused = g.counter("snapshots_refused")
        self.tenant_values = TenantValues(g)

    def process_element(self, snap, ctx):
        record, refusal = self.publisher.publish_or_refuse(snap)
        if refusal:
            self.refused.inc()
            yield REFUSALS, refusal
            return
        self.written.inc()
        self.bytes.inc(record.size_bytes)
        # Freshness is now minus this; the reader computes it (Prometheus: time() - value/1000).
        self.tenant_values.set(record.tenant_id, "snapshot_written_at_ms", time.time() * 1000)
        yield record.to_json()


class DriftMonitorFunction(_Keyed):
    """Rolling p95 per tenant, evaluated on event-time timers at each sub-window boundary."""

    state_name = "drift_window"

    def new(self, tenant, cfg):
        return DriftWindow(tenant, cfg.drift)

    def from_bytes(self, blob, cfg):
        return DriftWindow.from_bytes(blob, cfg.drift)

    def open(self, runtime_context):
        super().open(runtime_context)
        self.c = {k: self.metrics.counter(k) for k in ("deltas", "quarantines", "recoveries")}

    def process_element(self, delta, ctx):
        dw = self._load(delta.tenant_id)
        if dw.counters["samples"] + dw.counters["warmup"] == 0:
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        self.c["deltas"].inc()
        boundary = dw.add(delta)
        if boundary is not None:
            ctx.timer_service().register_event_time_timer(dw.timer_time(boundary))
        self._save(dw)
        return iter(())

    def on_timer(self, timestamp, ctx):
        dw = self._load(ctx.get_current_key())
        if timestamp != END_OF_INPUT:
            out = dw.evaluate(dw.boundary_of_timer(timestamp))
            self._save(dw)
            for s in out.scores:
                self._tenant_gauge(dw.tenant_id, "drift_p95_micro", s.drift_p95 * 1e6)
                yield DRIFT_SCORES, s.to_json()
            for q in out.quarantines:
                self.c["quarantines"].inc()
                yield QUARANTINES, q.to_json()
            for r in out.recoveries:
                self.c["recoveries"].inc()
                yield QUARANTINES, r.to_json()
        else:
            yield STATS, drift_stats(dw)


class Governor(FlatMapFunction):
    """Drift scores and quarantines meet the registry: record each snapshot's measured drift, and
    apply quarantines (the automatic rollback the policy asks for). Emits rollback events."""

    def __init__(self, store_location: str, policy_path: str | None):
        self.store_location = store_location
        self.policy_path = policy_path

    def open(self, runtime_context: RuntimeContext):
        self.governor = DriftGovernor(self.store_location, self.policy_path)
        self.rollbacks = runtime_context.get_metrics_group().add_group("upm").counter("rollbacks")

    def flat_map(self, value):
        for ev in self.governor.apply(value):
            self.rollbacks.inc()
            yield json.dumps(ev)
