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
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp

from state.config import UpmConfig
from state.drift import DriftWindow
from state.parse import dead_letter, last_resort_dead_letter, parse_message
from state.records import Feedback
from state.replay import ReplayBuffer
from state.trainer import TrainerState
from transforms.publish import (DriftGovernor, SnapshotPublisher, drift_stats,
                                refresh_champion, replay_stats, trainer_stats, warm_start)

END = GlobalWindow().max_timestamp()  # fires when the input is exhausted


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


class ReplayTrainDoFn(beam.DoFn):
    """ReplayBuffer and TrainerState of a tenant in one stateful DoFn.

    Flink keeps the order of records between two operators; Beam does not (a PCollection is
    unordered), so windows released in event-time order by the ReplayBuffer would reach a
    separate Trainer step in any order. Here the released windows go straight into the trainer,
    in order. Main output: (tenant, ShadowDelta) for the DriftMonitor."""

    REPLAY = ReadModifyWriteStateSpec("replay_buffer", BytesCoder())
    TRAINER = ReadModifyWriteStateSpec("trainer", BytesCoder())
    DRAIN = TimerSpec("drain", TimeDomain.WATERMARK)
    QUIET = TimerSpec("quiet", TimeDomain.REAL_TIME)
    FINAL = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, config: UpmConfig, emit_shadow_deltas: bool,
                 store_location: str | None = None):
        self.config = config
        self.emit_shadow_deltas = emit_shadow_deltas
        self.store_location = store_location

    def _load(self, replay, trainer, tenant):
        cfg = self.config.for_tenant(tenant)
        rb_blob, ts_blob = replay.read(), trainer.read()
        rb = ReplayBuffer.from_bytes(rb_blob, cfg.replay) if rb_blob else ReplayBuffer(
            tenant, cfg.replay)
        ts = TrainerState.from_bytes(ts_blob) if ts_blob else TrainerState(tenant, cfg.model,
                                                                           cfg.trainer)
        return rb, ts

    def _save(self, replay, trainer, rb, ts):
        replay.write(rb.to_bytes())
        trainer.write(ts.to_bytes())

    def process(self, element, replay=beam.DoFn.StateParam(REPLAY),
                trainer=beam.DoFn.StateParam(TRAINER), drain=beam.DoFn.TimerParam(DRAIN),
                quiet=beam.DoFn.TimerParam(QUIET), final=beam.DoFn.TimerParam(FINAL)):
        tenant, (kind, rec) = element
        rb, ts = self._load(replay, trainer, tenant)
        if rb.counters["received"] == 0 and ts.counters["feedback"] == 0:
            final.set(END)
            if self.store_location and ts.version == 0:
                warm_start(self.store_location, ts, rec.event_time)
            if self.store_location:
                refresh_champion(self.store_location, ts)
        if kind == "feedback":
            outs = [ts.on_feedback(rec)]
            replayed = None
        else:
            replayed = rb.add(rec)
            outs = []
            for w in replayed.released:
                outs.append(ts.on_window(w))
                if outs[-1].snapshots and self.store_location:
                    refresh_champion(self.store_location, ts)
            if rb.held and rb.config.quiet_release_ms:
                # Setting it again moves it: it fires only after that long without a window.
                quiet.set(Timestamp.now() + rb.config.quiet_release_ms / 1000)
        self._arm(ts, drain)
        self._save(replay, trainer, rb, ts)
        if replayed is not None:
            yield from self._replay_records(replayed)
        for out in outs:
            yield from self._train_records(tenant, out)

    def _arm(self, ts, drain):
        nxt = ts.next_drain_time()
        if nxt is not None:
            drain.set(Timestamp(micros=nxt * 1000))

    @on_timer(DRAIN)
    def on_drain(self, key=beam.DoFn.KeyParam, replay=beam.DoFn.StateParam(REPLAY),
                 trainer=beam.DoFn.StateParam(TRAINER), drain=beam.DoFn.TimerParam(DRAIN)):
        # The ready micro-batches are trained once the watermark passes them (as the Flink
        # job's timers do), so their shadow predictions reach the DriftMonitor before it judges
        # their boundary. The watermark never releases held windows (state/tenant.py).
        rb, ts = self._load(replay, trainer, key)
        out = ts.drain()
        self._arm(ts, drain)
        self._save(replay, trainer, rb, ts)
        yield from self._train_records(key, out)

    @on_timer(QUIET)
    def on_quiet(self, key=beam.DoFn.KeyParam, replay=beam.DoFn.StateParam(REPLAY),
                 trainer=beam.DoFn.StateParam(TRAINER), drain=beam.DoFn.TimerParam(DRAIN)):
        rb, ts = self._load(replay, trainer, key)
        replayed = rb.flush()
        outs = [ts.on_window(w) for w in replayed.released] + [ts.drain()]
        self._arm(ts, drain)
        self._save(replay, trainer, rb, ts)
        yield from self._replay_records(replayed)
        for out in outs:
            yield from self._train_records(key, out)

    @on_timer(FINAL)
    def on_end(self, key=beam.DoFn.KeyParam, replay=beam.DoFn.StateParam(REPLAY),
               trainer=beam.DoFn.StateParam(TRAINER)):
        rb, ts = self._load(replay, trainer, key)
        replayed = rb.flush()
        outs = [ts.on_window(w) for w in replayed.released] + [ts.flush()]
        self._save(replay, trainer, rb, ts)
        yield from self._replay_records(replayed)
        for out in outs:
            yield from self._train_records(key, out)
        yield beam.pvalue.TaggedOutput("stats", replay_stats(rb))
        yield beam.pvalue.TaggedOutput("stats", trainer_stats(ts))

    @staticmethod
    def _replay_records(out):
        for w, reason in out.refused:
            yield beam.pvalue.TaggedOutput("dead_letters", dead_letter(
                w.to_json(), reason, "replay", int(time.time() * 1000)).to_json())
        for d in out.duplicates:
            yield beam.pvalue.TaggedOutput("duplicates", d.to_json())
        for late in out.late:
            yield beam.pvalue.TaggedOutput("late", late.to_json())
        for g in out.gaps:
            yield beam.pvalue.TaggedOutput("gaps", g.to_json())

    def _train_records(self, tenant, out):
        for d in out.deltas:
            if self.emit_shadow_deltas:
                yield beam.pvalue.TaggedOutput("shadow_deltas", d.to_json())
            yield (tenant, d)
        for snap in out.snapshots:
            yield beam.pvalue.TaggedOutput("snapshot_objects", snap)


class DriftMonitorDoFn(beam.DoFn):
    """Rolling p95 per tenant, evaluated when the watermark passes each boundary + delay."""

    STATE = ReadModifyWriteStateSpec("drift_window", BytesCoder())
    EVALUATE = TimerSpec("evaluate", TimeDomain.WATERMARK)
    FINAL = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, config: UpmConfig):
        self.config = config

    def _load(self, state, tenant):
        blob = state.read()
        cfg = self.config.for_tenant(tenant).drift
        return DriftWindow.from_bytes(blob, cfg) if blob else DriftWindow(tenant, cfg)

    def process(self, element, state=beam.DoFn.StateParam(STATE),
                evaluate=beam.DoFn.TimerParam(EVALUATE), final=beam.DoFn.TimerParam(FINAL)):
        tenant, delta = element
        dw = self._load(state, tenant)
        if dw.counters["samples"] + dw.counters["warmup"] == 0:
            final.set(END)
        dw.add(delta)
        self._arm(dw, evaluate)
        state.write(dw.to_bytes())
        return iter(())

    def _arm(self, dw, evaluate):
        nxt = dw.next_boundary()
        if nxt is not None:
            evaluate.set(Timestamp(micros=dw.timer_time(nxt) * 1000))

    @on_timer(EVALUATE)
    def on_evaluate(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                    state=beam.DoFn.StateParam(STATE), evaluate=beam.DoFn.TimerParam(EVALUATE)):
        dw = self._load(state, key)
        due = dw.boundary_of_timer(_ms(fired))
        while (b := dw.next_boundary()) is not None and b <= due:
            out = dw.evaluate(b)
            for s in out.scores:
                yield beam.pvalue.TaggedOutput("drift_scores", s.to_json())
            for q in out.quarantines:
                yield beam.pvalue.TaggedOutput("quarantines", q.to_json())
            for r in out.recoveries:
                yield beam.pvalue.TaggedOutput("quarantines", r.to_json())
        self._arm(dw, evaluate)
        state.write(dw.to_bytes())

    @on_timer(FINAL)
    def on_end(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(STATE)):
        dw = self._load(state, key)
        yield beam.pvalue.TaggedOutput("stats", drift_stats(dw))


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
