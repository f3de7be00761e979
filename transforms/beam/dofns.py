"""Beam DoFns of the UPM job: the same thin translation as `transforms/flink/functions.py`.
Beam state holds the core object's bytes, Beam event-time timers call the core's time methods,
and the core's outputs become the main output or tagged outputs (JSON lines).

Beam keeps one timer per timer spec and key (setting it again moves it), so each DoFn keeps its
timer at the earliest instant the core needs and, when it fires, lets the core do everything
due by then -- the same effect as Flink's one timer per instant.
"""

from __future__ import annotations

import json
import time

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from state.config import UpmConfig
from state.parse import dead_letter, last_resort_dead_letter, parse_message
from state.records import Feedback
from state.tenant import TenantPipeline
from state.train_group import TrainGroup
from transforms.publish import DriftGovernor, SnapshotPublisher, first_record, refresh_champion

END = GlobalWindow().max_timestamp()  # fires when the input is exhausted
NEVER_DUE = -(1 << 62)  # an event time before every drift judgement
COUNTERS = ("windows_in", "feedback_in", "trained", "steps", "released", "duplicates", "late",
            "gaps", "dead_letters", "deltas", "snapshots", "quarantines", "recoveries")


def _ms(ts: Timestamp) -> int:
    return ts.micros // 1000


class Parse(beam.DoFn):
    """JSON text -> (tenant, (kind, record)) with the event time as its timestamp; anything bad
    -> the `dead_letters` output."""

    def __init__(self, source_name: str, max_features: int):
        self.source_name = source_name
        self.max_features = max_features

    def process(self, raw):
        now = int(time.time() * 1000)
        try:
            parsed = parse_message(raw, self.max_features)
            bad = None if parsed.ok else dead_letter(raw, parsed.reason, self.source_name, now)
        except Exception as e:  # last resort: no single message may fail the pipeline
            parsed, bad = None, last_resort_dead_letter(raw, e, self.source_name, now)
        if bad is not None:
            yield beam.pvalue.TaggedOutput("dead_letters", bad.to_json())
            return
        rec = parsed.record
        kind = "feedback" if isinstance(rec, Feedback) else "window"
        yield beam.window.TimestampedValue((rec.tenant_id, (kind, rec)),
                                           Timestamp(micros=rec.event_time * 1000))


class TenantDoFn(beam.DoFn):
    """A tenant's whole path (state/tenant.py: ReplayBuffer -> Trainer -> DriftWindow) in one
    stateful DoFn, as the Flink job's TenantFunction: the same state machine, so the
    same releases, versions, warm start and drift decisions. (A PCollection is unordered, so the
    ReplayBuffer's ordered releases could not reach a separate trainer step in order, nor the
    trainer's shadow deltas a separate drift step before it judged their boundary.)

    Beam state holds the pipeline's parts; Beam keeps one timer per spec and key, so the
    event-time timer `tick` sits at the earliest instant the pipeline asks for and, when it
    fires, the pipeline does everything due by then. Main output: Snapshots.

    Within a bundle a tenant's pipeline is read from state once and kept (with the parts the
    state holds): each element or timer after the first writes back only what it changed
    (`drain_changes`), as the Flink job does, instead of rebuilding and re-encoding every part.
    A new bundle starts from state, so a retried bundle sees what was committed."""

    STATE = ReadModifyWriteStateSpec("tenant", PickleCoder())
    TICK = TimerSpec("tick", TimeDomain.WATERMARK)
    QUIET = TimerSpec("quiet", TimeDomain.REAL_TIME)
    FINAL = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, config: UpmConfig, emit_shadow_deltas: bool,
                 store_location: str | None = None):
        self.config = config
        self.emit_shadow_deltas = emit_shadow_deltas
        self.store_location = store_location

    def setup(self):
        # The same counters as the Flink job's (Beam metrics, namespace "upm")
        self.counters = {name: Metrics.counter("upm", name) for name in COUNTERS}
        self._bundle: dict[str, tuple[TenantPipeline, dict[str, bytes]]] = {}
        self.group = TrainGroup()

    def start_bundle(self):
        self._bundle = {}

    def _load(self, state, tenant: str) -> TenantPipeline:
        held = self._bundle.get(tenant)
        if held is not None:
            return held[0]
        parts = state.read()
        p = (TenantPipeline.from_parts(parts, self.config) if parts
             else TenantPipeline.new(tenant, self.config)).train_in(self.group)
        if self.store_location:
            store = self.store_location
            p.before_first_record = lambda ts, t: first_record(store, ts, t)
            p.after_snapshot = lambda ts: refresh_champion(store, ts)
        self._bundle[tenant] = (p, dict(parts or {}))
        return p

    def _save(self, state, p: TenantPipeline, tick=None) -> None:
        due = p.timers()
        if due and tick is not None:
            tick.set(Timestamp(micros=min(due) * 1000))
        parts = self._bundle[p.tenant_id][1]
        puts, gone = p.drain_changes()
        parts.update(puts)
        for key in gone:
            parts.pop(key, None)
        # The same dict at every write of the bundle: what the runner commits is its last
        # value, which is the pipeline's parts (a new bundle copies what it reads).
        state.write(parts)

    def process(self, element, state=beam.DoFn.StateParam(STATE),
                tick=beam.DoFn.TimerParam(TICK), quiet=beam.DoFn.TimerParam(QUIET),
                final=beam.DoFn.TimerParam(FINAL)):
        tenant, (kind, rec) = element
        p = self._load(state, tenant)
        if p.is_new:
            final.set(END)
        if kind == "feedback":
            self.counters["feedback_in"].inc()
            out = p.on_feedback(rec)
        else:
            self.counters["windows_in"].inc()
            out = p.on_window(rec)
            if p.replay.held and p.replay.config.quiet_release_ms:
                # Setting it again moves it: it fires only after that long without a window.
                quiet.set(Timestamp.now() + p.replay.config.quiet_release_ms / 1000)
        self._save(state, p, tick)
        yield from self._records(out)

    @on_timer(TICK)
    def on_tick(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                state=beam.DoFn.StateParam(STATE), tick=beam.DoFn.TimerParam(TICK)):
        p = self._load(state, key)
        out = p.on_timer(_ms(fired))
        self._save(state, p, tick)
        yield from self._records(out)

    @on_timer(QUIET)
    def on_quiet(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE),
                 tick=beam.DoFn.TimerParam(TICK)):
        # A processing-time timer does not know the watermark: release and train what is held,
        # and leave the drift judgements to the event-time timer set after it.
        p = self._load(state, key)
        out = p.on_quiet(NEVER_DUE)
        self._save(state, p, tick)
        yield from self._records(out)

    @on_timer(FINAL)
    def on_end(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE)):
        p = self._load(state, key)
        out = p.end()
        self._save(state, p)
        yield from self._records(out)
        for stats in p.end_stats():
            yield beam.pvalue.TaggedOutput("stats", stats)

    def _records(self, out):
        for name, n in out.counts().items():
            if n:
                self.counters[name].inc(n)
        for kind, record in out.records(int(time.time() * 1000), self.emit_shadow_deltas):
            if kind == "snapshot":
                yield record
            else:
                yield beam.pvalue.TaggedOutput(kind, record.to_json())


class PublishSnapshot(beam.DoFn):
    def __init__(self, store_location: str, compression: str):
        self.store_location = store_location
        self.compression = compression

    def setup(self):
        self.publisher = SnapshotPublisher(self.store_location, self.compression)

    def process(self, snap):
        record, refusal = self.publisher.publish_or_refuse(snap)
        if refusal:
            yield beam.pvalue.TaggedOutput("refusals", refusal)
        else:
            yield record.to_json()


class Govern(beam.DoFn):
    def __init__(self, store_location: str, policy_path: str | None):
        self.store_location = store_location
        self.policy_path = policy_path

    def setup(self):
        self.governor = DriftGovernor(self.store_location, self.policy_path)

    def process(self, record_json):
        for ev in self.governor.apply(record_json):
            yield json.dumps(ev)

    def finish_bundle(self):
        self.governor.flush()
