"""PyFlink functions of the UPM job. Each is a thin translation: Flink keyed state holds the core
object's bytes, Flink event-time timers call the core's time methods, a processing-time timer
tells the core a tenant went quiet, and the core's outputs become the main output or side
outputs (JSON lines). All logic lives in `state/`.

The TenantFunction takes raw input lines, keyed (and timed) by the job's Java steps
(transforms/flink/java_steps.py), and parses them itself: one Python call per line. Its buffer
keeps parsed records as text (`element_text`); from the TenantFunction to the SnapshotWriter go
core Snapshots, which PyFlink pickles.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time

from pyflink.common import Types
from pyflink.datastream import OutputTag, TimeDomain
from pyflink.datastream.functions import (FlatMapFunction, KeyedProcessFunction,
                                          ProcessFunction, RuntimeContext)
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor

from state.config import UpmConfig
from state.parse import dead_letter, last_resort_dead_letter, parse_message
from state.reasons import read_differently
from state.records import RECORD_KINDS, FeatureWindow, Feedback
from state.tenant import TenantPipeline
from state.tenant_cache import TenantCache, TenantLimit
from state.train_group import TrainGroup
from state.trainer import FRESHNESS_SLO_MS
from transforms.flink.metrics import TenantValues, counter
from transforms.publish import DriftGovernor, SnapshotPublisher, first_record, refresh_champion

END_OF_INPUT = (1 << 63) - 1  # Flink's final watermark: timers here fire when a bounded input ends
# When a bounded input ends, every tenant's timer here fires before any tenant's END_OF_INPUT
# timer (one watermark pass fires timers in time order): each releases what it holds first, so
# that at the END_OF_INPUT turns their last batches wait together and train in shared calls
# (state/train_group.py) instead of one TensorFlow call per tenant.
RELEASE_AT_END = END_OF_INPUT - 1
# A tenant's arrivals wait in keyed state and are handed to its pipeline together: when the
# watermark next moves, after FLUSH_ROWS of them, or after FLUSH_AFTER_MS of processing time.
FLUSH_ROWS = 256
FLUSH_AFTER_MS = 1000
# The live pipelines that may keep their arrays decoded, at most a quarter of
# scale.live_tenants (state/tenant_cache.py).
HOT_TENANTS = 1000

# One side output per record kind (state/records.py); all carry JSON text.
TAGS = {kind: OutputTag(kind, Types.STRING()) for kind in RECORD_KINDS}
DEAD_LETTERS, STATS, REFUSALS = TAGS["dead_letters"], TAGS["stats"], TAGS["refusals"]


# The Java key step's output, Row(tenant key, raw line): the shape PyFlink's key_by builds.
ELEMENT_TYPE = Types.STRING()
KEYED_TYPE = Types.ROW([Types.STRING(), ELEMENT_TYPE])


def element_text(rec: FeatureWindow | Feedback) -> str:
    """A parsed record as the tenant operator's buffer keeps it: its state bytes (`to_state`)
    after a kind byte, as base64 text. A Flink STRING crosses between Java and Python as it is,
    where a pickled-object type is pickled again at every crossing."""
    kind = b"f" if isinstance(rec, Feedback) else b"w"
    return base64.b64encode(kind + rec.to_state()).decode("ascii")


def element_of(text: str) -> FeatureWindow | Feedback:
    blob = base64.b64decode(text)
    return (Feedback if blob[:1] == b"f" else FeatureWindow).from_state(blob[1:])


_PROFILES = itertools.count()


def _start_profile(runtime_context: RuntimeContext):
    """With UPM_PROFILE_DIR set, cProfile of this operator's Python, written there as
    `tenant-<pid>-<n>.prof` when the task ends (py-spy sees little of it: in thread mode the
    Python runs on Flink's task thread inside the JVM)."""
    directory = os.environ.get("UPM_PROFILE_DIR")
    if not directory:
        return None
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
    # (not the subtask index: PyFlink 2.3's embedded get_index_of_this_subtask calls a Java
    # method that is gone)
    path = os.path.join(directory, f"tenant-{os.getpid()}-{next(_PROFILES)}.prof")
    return profiler, path


def _now_ms() -> int:
    return int(time.time() * 1000)


class TenantFunction(KeyedProcessFunction):
    """A tenant's whole path (state/tenant.py: ReplayBuffer -> Trainer -> DriftWindow) in one
    keyed operator. Main output: Snapshots (for the SnapshotWriter); records on side outputs.

    Arrivals are batched per tenant: each is appended to a ListState (`buffer`, so a checkpoint
    holds what was accepted and not yet processed) and the pipeline takes them together
    (`on_records`), with one state write, one timer update and one metrics push per batch
    instead of per window. A batch is taken before any timer of the tenant fires (a flush
    timer at the watermark + 1 fires first whenever the watermark moves), so every decision is
    the one a window-at-a-time operator would make; also after FLUSH_ROWS arrivals and after
    FLUSH_AFTER_MS of processing time, so a stalled watermark does not hold windows back. A
    tenant's first arrival since the watermark last moved is taken at once instead (it has
    nothing to wait with yet): a tenant that sends rarely costs no buffering.

    Keyed state is one MapState of the pipeline's parts: after each batch only the parts it
    changed are written (a held window, a remembered id, the weights after a step, ...), not
    the whole object. The `scale.live_tenants` most recently used pipelines stay in memory
    (`self.live`, state/tenant_cache.py: most of them parked; a tenant that leaves it is
    decoded from its parts again when it next has work); the cache cannot go stale: only this
    subtask writes its keys' state, and after any restore Flink opens a fresh function
    instance with an empty cache. A tenant with no state
    yet warm-starts from its newest snapshot in the store, if any, before its first record is
    trained; past `scale.max_tenants` tenants, its records are dead letters instead."""

    def __init__(self, config: UpmConfig, emit_shadow_deltas: bool, store_location: str | None,
                 times_from_lines: bool = True):
        self.config = config
        self.emit_shadow_deltas = emit_shadow_deltas
        self.store_location = store_location
        self.times_from_lines = times_from_lines  # else the source's (Kafka) timestamps
        self.max_features = config.source.max_features

    def open(self, runtime_context: RuntimeContext):
        self._profile = _start_profile(runtime_context)
        self.state = runtime_context.get_map_state(MapStateDescriptor(
            "tenant", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("buffer", ELEMENT_TYPE))
        g = runtime_context.get_metrics_group().add_group("upm")
        self.c = {k: counter(g, k) for k in
                  ("messages_in", "windows_in", "duplicates", "late", "released", "gaps",
                   "feedback_in", "dead_letters", "trained", "snapshots", "steps", "deltas",
                   "quarantines", "recoveries", "tenants_refused", "train_calls",
                   "trained_ahead")}
        self.scale = self.config.scale
        self.tenant_values = TenantValues(g, self.scale.tenant_metrics)
        self.live = TenantCache(self.scale.live_tenants,
                                min(HOT_TENANTS, self.scale.live_tenants // 4))
        self.limit = TenantLimit(self.scale.max_tenants)
        self.group = TrainGroup()
        self._armed: dict[str, set[int]] = {}  # per tenant, timers set and not yet fired
        # Per tenant, processing time of its last window and of its armed quiet timer. Not
        # state: after a restore a tenant counts as having just sent (its timer finds no entry).
        self._last_window_at: dict[str, int] = {}
        self._quiet_at: dict[str, int] = {}
        self._counts = dict.fromkeys(self.c, 0)  # pushed to the Flink counters after each batch
        # Per tenant, the records buffered since its last flush, as read (the buffer state is
        # read instead for a tenant this instance has not flushed yet: after a restore it may
        # hold arrivals from before), and the flush timers armed (event time, processing time).
        self._buffered: dict[str, list] = {}
        self._flushed: set[str] = set()
        self._flush_at: dict[str, int] = {}
        self._flush_wall_at: dict[str, int] = {}
        self._taken_in: dict[str, int] = {}  # per tenant, the watermark of its last hand-over

    def close(self):
        if self._profile:
            profiler, path = self._profile
            profiler.disable()
            profiler.dump_stats(path)

    def _load(self, tenant: str) -> TenantPipeline:
        p = self.live.get(tenant)
        if p is None:
            parts = dict(self.state.items())
            p = (TenantPipeline.from_parts(parts, self.config) if parts
                 else TenantPipeline.new(tenant, self.config)).train_in(self.group)
            if self.store_location:
                store = self.store_location
                p.before_first_record = lambda ts, t: first_record(store, ts, t)
                p.after_snapshot = lambda ts: refresh_champion(store, ts)
            self.live.put(tenant, p)  # (every pipeline's state is written after its batch)
        return p

    def _has_state(self) -> bool:
        """Whether the current key has anything in keyed state (after a restore)."""
        return not self.state.is_empty() or any(True for _ in self.buffer.get())

    def _save(self, p: TenantPipeline) -> None:
        puts, gone = p.drain_changes()
        if puts:
            self.state.put_all(puts)
        for k in gone:
            self.state.remove(k)

    def _count(self, name: str, n: int = 1) -> None:
        self._counts[name] += n

    def _push_counts(self) -> None:
        for name, n in self.group.take_counts().items():
            self._counts[name] += n
        for name, n in self._counts.items():
            if n:
                self.c[name].inc(n)
                self._counts[name] = 0

    def process_element(self, value, ctx):
        self._count("messages_in")
        rec, refused = self._read(value, ctx)
        if refused is not None:
            self._count("dead_letters")
            self._push_counts()
            yield DEAD_LETTERS, refused.to_json()
            return
        tenant = rec.tenant_id
        if not self.limit.admits(tenant, self._has_state):
            self._count("feedback_in" if isinstance(rec, Feedback) else "windows_in")
            self._count("dead_letters")
            self._count("tenants_refused")
            self._push_counts()
            yield DEAD_LETTERS, dead_letter(rec.to_json(), self.limit.reason, "tenant",
                                            _now_ms()).to_json()
            return
        held = self._buffered.get(tenant)
        if held is None and self._taken_in.get(tenant) != ctx.timer_service().current_watermark():
            # Nothing of the tenant was taken since the watermark last moved: this arrival is
            # taken at once (one of many tenants that each send rarely then costs no buffer
            # write, flush timers or timer callback); the next ones wait to be taken together.
            yield from self._flush(tenant, ctx)  # (after a restore: what the buffer held)
            yield from self._take(tenant, [rec], ctx)
            return
        self.buffer.add(element_text(rec))
        if held is None:
            held = self._buffered[tenant] = []
        held.append(rec)
        if len(held) >= FLUSH_ROWS:
            yield from self._flush(tenant, ctx)
        elif len(held) == 1:
            self._arm_flush(tenant, ctx)

    def _read(self, line, ctx):
        """(record, None), or (None, its DeadLetter): a line that does not parse, or that the
        Java steps routed to another tenant or time than the one it states."""
        try:
            got = self._record_or_reason(line, ctx)
            if isinstance(got, str):
                return None, dead_letter(line, got, "files", _now_ms())
            return got, None
        except Exception as e:  # last resort: no single message may fail the job
            return None, last_resort_dead_letter(line, e, "files", _now_ms())

    def _record_or_reason(self, line, ctx) -> FeatureWindow | Feedback | str:
        """The line's record, or the reason it is refused."""
        parsed = parse_message(line, self.max_features)
        if not parsed.ok:
            return parsed.reason
        rec = parsed.record
        key = ctx.get_current_key()
        if rec.tenant_id != key:
            return read_differently("tenant_id", repr(key), repr(rec.tenant_id))
        if self.times_from_lines and ctx.timestamp() != rec.event_time:
            name = "window_end" if isinstance(rec, FeatureWindow) else "observed_at"
            return read_differently(name, str(ctx.timestamp()), str(rec.event_time))
        return rec

    def _arm_flush(self, tenant: str, ctx) -> None:
        service = ctx.timer_service()
        watermark = service.current_watermark()
        if tenant not in self._flush_at and watermark < RELEASE_AT_END - 1:
            self._flush_at[tenant] = watermark + 1
            service.register_event_time_timer(watermark + 1)
        if tenant not in self._flush_wall_at:
            self._flush_wall_at[tenant] = _now_ms() + FLUSH_AFTER_MS
            service.register_processing_time_timer(self._flush_wall_at[tenant])

    def _disarm_flush(self, tenant: str, ctx) -> None:
        """Delete the flush timers still pending once the buffer is empty: a timer callback
        into Python that finds nothing to flush costs more than the delete. (Not one that is
        also a timer the pipeline or the quiet release wants.)"""
        service = ctx.timer_service()
        at = self._flush_at.pop(tenant, None)
        if at is not None and at not in self._armed.get(tenant, ()) and at < RELEASE_AT_END:
            service.delete_event_time_timer(at)
        wall = self._flush_wall_at.pop(tenant, None)
        if wall is not None and self._quiet_at.get(tenant) != wall:
            service.delete_processing_time_timer(wall)

    def _flush(self, tenant: str, ctx):
        """Hand the tenant's buffered arrivals to its pipeline, in arrival order."""
        held = self._buffered.get(tenant)
        if tenant not in self._flushed:
            self._flushed.add(tenant)
            held = [element_of(v) for v in self.buffer.get()]
        if not held:
            return
        self._buffered.pop(tenant, None)
        self.buffer.clear()
        self._disarm_flush(tenant, ctx)
        yield from self._take(tenant, held, ctx)

    def _take(self, tenant: str, held: list, ctx):
        """Hand arrivals to the tenant's pipeline, in arrival order."""
        self._taken_in[tenant] = ctx.timer_service().current_watermark()
        p = self._load(tenant)
        if p.is_new:
            ctx.timer_service().register_event_time_timer(RELEASE_AT_END)
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        feedback = sum(1 for rec in held if isinstance(rec, Feedback))
        self._count("windows_in", len(held) - feedback)
        self._count("feedback_in", feedback)
        if feedback < len(held):
            self._last_window_at[tenant] = _now_ms()
        yield from self._finish(p, p.on_records(held), ctx)

    def on_timer(self, timestamp, ctx):
        tenant = ctx.get_current_key()
        processing = ctx.time_domain() == TimeDomain.PROCESSING_TIME
        # A flush timer's entry goes when it fires; one that is nothing else returns after the
        # flush without loading the pipeline.
        if processing:
            flush_only = self._flush_wall_at.get(tenant) == timestamp
            if flush_only:
                del self._flush_wall_at[tenant]
                flush_only = self._quiet_at.get(tenant) != timestamp
        else:
            armed = self._armed.get(tenant, set())
            flush_only = self._flush_at.get(tenant) == timestamp
            if flush_only:
                del self._flush_at[tenant]
                flush_only = timestamp not in armed and timestamp < RELEASE_AT_END
        yield from self._flush(tenant, ctx)  # what arrived before this timer, first
        if flush_only:
            return
        p = self._load(tenant)
        if processing:
            yield from self._on_quiet_timer(p, timestamp, ctx)
            return
        armed.discard(timestamp)
        if timestamp == RELEASE_AT_END:
            yield from self._finish(p, p.release(), ctx, arm=False)
            return
        if timestamp == END_OF_INPUT:
            yield from self._finish(p, p.end(), ctx, arm=False)
            for stats in p.end_stats():
                yield STATS, stats
            return
        if ctx.timer_service().current_watermark() == END_OF_INPUT:
            return  # the input ended: the END_OF_INPUT timer, fired last, does all that is left
        yield from self._finish(p, p.on_timer(timestamp), ctx)

    def _on_quiet_timer(self, p: TenantPipeline, timestamp, ctx):
        self._quiet_at.pop(p.tenant_id, None)
        watermark = ctx.timer_service().current_watermark()
        if watermark == END_OF_INPUT:
            return
        last = self._last_window_at.setdefault(p.tenant_id, timestamp)
        if timestamp - last >= p.replay.config.quiet_release_ms:
            yield from self._finish(p, p.on_quiet(watermark), ctx)
        else:
            self._arm_quiet(p, ctx)

    def _arm_quiet(self, p: TenantPipeline, ctx) -> None:
        """One processing-time timer per tenant holding windows, at its last window plus
        `quiet_release_ms`; a timer that finds a newer window re-arms instead of releasing."""
        quiet = p.replay.config.quiet_release_ms
        if quiet and p.replay.held and p.tenant_id not in self._quiet_at:
            at = self._last_window_at.get(p.tenant_id, _now_ms()) + quiet
            ctx.timer_service().register_processing_time_timer(at)
            self._quiet_at[p.tenant_id] = at

    def _finish(self, p: TenantPipeline, out, ctx, arm: bool = True):
        if arm:
            # Only the timers the pipeline wants now: a release timer a later window made
            # pointless (the tenant's own frontier released what it waited for) is deleted,
            # which is cheaper than letting it call back into Python to find nothing to do.
            armed = self._armed.get(p.tenant_id, set())
            watermark = ctx.timer_service().current_watermark()
            wanted = set(p.timers(watermark if watermark < RELEASE_AT_END - 1 else None))
            if wanted != armed:
                service = ctx.timer_service()
                for t in wanted - armed:
                    service.register_event_time_timer(t)
                for t in armed - wanted:
                    service.delete_event_time_timer(t)
                self._armed[p.tenant_id] = wanted
            self._arm_quiet(p, ctx)
        self._save(p)
        if out.trained:
            ts = p.trainer
            self.tenant_values.set(p.tenant_id, "loss_micro", ts.last_loss * 1e6)
            for name, value in ts.scores().items():  # prequential, since the start
                if name != "n" and value is not None:
                    self.tenant_values.set(p.tenant_id, name + "_micro", value * 1e6)
        for name, n in out.counts().items():
            self._count(name, n)
        for kind, rec in out.records(_now_ms(), self.emit_shadow_deltas):
            if kind == "snapshot":
                self.tenant_values.set(p.tenant_id, "snapshot_version", rec.manifest["version"])
                yield rec
                continue
            if kind == "drift_scores":
                self._push_drift(p, rec)
            yield TAGS[kind], rec.to_json()
        self.tenant_values.set(p.tenant_id, "replay_held_windows", p.replay.held)
        self._push_counts()

    def _push_drift(self, p: TenantPipeline, score) -> None:
        # Flink counters hold integers: fractions are pushed in millionths (the Prometheus
        # recording rules in runners/monitoring/ divide them back).
        tenant = p.tenant_id
        self.tenant_values.set(tenant, "quarantines_total", p.drift.counters["quarantines"])
        self.tenant_values.set(tenant, "quarantined", int(p.drift.in_episode))
        self.tenant_values.set(tenant, "drift_p95_micro", score.drift_p95 * 1e6)
        if score.level is not None:
            self.tenant_values.set(tenant, "drift_level_micro", score.level * 1e6)
        # Whether the tenant has the samples to be judged now (not in warm-up, its stream not
        # thinned out): the raise level below is its last one, shown only while this is 1.
        self.tenant_values.set(tenant, "drift_judged", int(score.raise_at is not None))
        if score.raise_at is not None:
            self.tenant_values.set(tenant, "drift_raise_at_micro", score.raise_at * 1e6)


class SnapshotWriter(ProcessFunction):
    """Publish a Snapshot (write create-only and idempotent, sign when UPM_SIGNING_KEY_FILE is
    set, register) and emit its record; a version the store holds with other bytes is refused
    (REFUSALS side output) and the job goes on."""

    def __init__(self, store_location: str, compression: str, tenant_metrics: int):
        self.store_location = store_location
        self.compression = compression
        self.tenant_metrics = tenant_metrics

    def open(self, runtime_context: RuntimeContext):
        self.publisher = SnapshotPublisher(self.store_location, self.compression)
        g = runtime_context.get_metrics_group().add_group("upm")
        self.written = counter(g, "snapshots_written")
        self.bytes = counter(g, "snapshot_bytes")
        self.refused = counter(g, "snapshots_refused")
        self.tenant_values = TenantValues(g, self.tenant_metrics)

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
        slo = FRESHNESS_SLO_MS.get(record.mode)
        if slo:
            self.tenant_values.set(record.tenant_id, "freshness_slo_ms", slo)
        yield record.to_json()


class Governor(FlatMapFunction):
    """Drift scores and quarantines meet the registry: record each snapshot's measured drift, and
    apply quarantines (the automatic rollback the policy asks for). Emits rollback events."""

    def __init__(self, store_location: str, policy_path: str | None):
        self.store_location = store_location
        self.policy_path = policy_path

    def open(self, runtime_context: RuntimeContext):
        self.governor = DriftGovernor(self.store_location, self.policy_path)
        self.rollbacks = counter(runtime_context.get_metrics_group().add_group("upm"), "rollbacks")

    def flat_map(self, value):
        for ev in self.governor.apply(value):
            self.rollbacks.inc()
            yield json.dumps(ev)

    def close(self):
        self.governor.close()  # the measured drift not yet written (end of a bounded input)
