"""TenantPipeline: one tenant's whole streaming path — ReplayBuffer -> TrainerState ->
DriftWindow — as one state machine with one event-time clock. No I/O, no clock of its own.

An engine keeps one per key in one keyed operator (no shuffle and no serialization between the
three steps) and translates: an element into `on_window`/`on_feedback`, an event-time timer
into `on_timer`, `replay.quiet_release_ms` of processing time without a window of the tenant
into `on_quiet`, the end of a bounded input into `end`. It arms the event-time timers `timers()`
asks for.

Which windows are released, and in what order, depends only on the tenant's own arrivals: the
replay rule (its own frontier), the end of input, or the tenant going quiet. The engine's
watermark never releases: it is one clock for every tenant of the job, and one tenant's window
from a wrong clock (a day ahead, say) would otherwise release every other tenant's held windows
in arrival order, whenever that watermark happened to reach the operator.

Order of work, the same as three operators chained by watermarks would give:
- a timer at time t trains the ready micro-batches (so no shadow prediction is still queued),
  then judges every drift boundary whose evaluation time is at or before t, in boundary order;
- `on_quiet(t)` releases everything held, then does what a timer at t does;
- `end` releases everything held, trains the partial batch, then judges every boundary left.
An engine may hand over a tenant's arrivals in batches (`on_records`), provided it does so before
any timer of the tenant fires: the outcome is that of one call per arrival.

State. `drain_changes()` gives the parts changed since the last call (state/parts.py), each
part name prefixed by its step ("r." replay, "t." trainer, "d." drift); `from_parts` rebuilds
the pipeline from every part an engine holds.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

from model.snapshot import Snapshot
from state.config import UpmConfig
from state.drift import DriftOutput, DriftWindow
from state.parse import dead_letter
from state.records import FeatureWindow, Feedback, ShadowDelta
from state.replay import ReplayBuffer, ReplayOutput
from state.stats import drift_stats, replay_stats, trainer_stats
from state.trainer import TrainerOutput, TrainerState


# The record kinds (state/records.py RECORD_KINDS) a tenant's path emits; besides them it
# gives Snapshot objects, which the engine publishes (the publisher emits `snapshots` and
# `refusals`, the governor `rollbacks`).
TENANT_KINDS = ("dead_letters", "duplicates", "late", "gaps", "shadow_deltas", "drift_scores",
                "quarantines", "stats")


@dataclass
class TenantOutput:
    replay: ReplayOutput = field(default_factory=ReplayOutput)
    deltas: list[ShadowDelta] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    drift: DriftOutput = field(default_factory=DriftOutput)
    refused: list[tuple[FeatureWindow, str]] = field(default_factory=list)  # by the trainer
    trained: int = 0  # windows trained by the event (as the trainer counts them)
    steps: int = 0  # update steps it took

    def counts(self) -> dict[str, int]:
        """What this output adds to the job's counters (the Flink metrics, the Beam metrics)."""
        r = self.replay
        return {"trained": self.trained, "steps": self.steps,
                "released": len(r.released), "duplicates": len(r.duplicates),
                "late": len(r.late), "gaps": len(r.gaps),
                "dead_letters": len(r.refused) + len(self.refused),
                "deltas": len(self.deltas), "snapshots": len(self.snapshots),
                "quarantines": len(self.drift.quarantines),
                "recoveries": len(self.drift.recoveries)}

    def records(self, now_ms: int, shadow_deltas: bool = True):
        """(output kind, record) in the order an engine emits them; a Snapshot object's kind is
        "snapshot" (the engine publishes it, and the publisher emits its `snapshots` record).
        The shadow deltas (one per trained window) only with `shadow_deltas`."""
        for w, reason in self.replay.refused:
            yield "dead_letters", dead_letter(w.to_json(), reason, "replay", now_ms)
        for w, reason in self.refused:
            yield "dead_letters", dead_letter(w.to_json(), reason, "trainer", now_ms)
        deltas = self.deltas if shadow_deltas else ()
        for kind, items in (("duplicates", self.replay.duplicates), ("late", self.replay.late),
                            ("gaps", self.replay.gaps), ("shadow_deltas", deltas),
                            ("snapshot", self.snapshots), ("drift_scores", self.drift.scores),
                            ("quarantines", self.drift.quarantines),
                            ("quarantines", self.drift.recoveries)):
            for item in items:
                yield kind, item


class TenantPipeline:
    def __init__(self, replay: ReplayBuffer, trainer: TrainerState, drift: DriftWindow):
        self.replay = replay
        self.trainer = trainer
        self.drift = drift
        self.tenant_id = replay.tenant_id
        # Called with the trainer and the event time of its first record, before that record is
        # trained (the engine's warm start from a store); not state.
        self.before_first_record: Callable[[TrainerState, int], None] | None = None
        # Called with the trainer after it cut snapshots (the engine's champion refresh,
        # transforms/publish.py); not state.
        self.after_snapshot: Callable[[TrainerState], None] | None = None
        self._pending: set[int] = set()  # drift boundaries with samples, not yet judged

    @classmethod
    def new(cls, tenant_id: str, config: UpmConfig) -> "TenantPipeline":
        c = config.for_tenant(tenant_id)
        return cls(ReplayBuffer.new(tenant_id, c.replay),
                   TrainerState.new(tenant_id, c.trainer, c.model),
                   DriftWindow.new(tenant_id, c.drift))

    def train_in(self, group) -> "TenantPipeline":
        """Train in `group` (state/train_group.py) with the other tenants an engine holds."""
        self.trainer.group = group
        return self

    @property
    def is_new(self) -> bool:
        return self.replay.counters["received"] == 0 and self.trainer.counters["feedback"] == 0 \
            and self.replay.counters["future"] == 0

    # -- events ----------------------------------------------------------------------------

    def on_window(self, w: FeatureWindow) -> TenantOutput:
        return self.on_records((w,))

    def on_feedback(self, fb: Feedback) -> TenantOutput:
        return self.on_records((fb,))

    def on_records(self, records) -> TenantOutput:
        """Windows and feedback in arrival order, as one output: the decisions and records of
        one call per arrival (records of one kind in the same order)."""
        out, before = TenantOutput(), self._progress()
        for rec in records:
            if isinstance(rec, Feedback):
                self._train(out, rec)
                continue
            released = out.replay.released
            n = len(released)
            self.replay.add_to(out.replay, rec)
            for r in released[n:]:
                self._train(out, r)
        return self._counted(out, before)

    def on_timer(self, time: int) -> TenantOutput:
        out, before = TenantOutput(), self._progress()
        self._take(out, self.trainer.drain())
        self._judge(out, lambda b: self.drift.timer_time(b) <= time)
        return self._counted(out, before)

    def on_quiet(self, time: int) -> TenantOutput:
        """No window of this tenant arrived for `replay.quiet_release_ms` of processing time
        (the engine's watermark is at `time`): release what is held, so a tenant that stops
        sending does not keep its last windows untrained."""
        out, before = TenantOutput(), self._progress()
        out.replay = self.replay.flush()
        for r in out.replay.released:
            self._train(out, r)
        self._take(out, self.trainer.drain())
        self._judge(out, lambda b: self.drift.timer_time(b) <= time)
        return self._counted(out, before)

    def end(self) -> TenantOutput:
        out, before = TenantOutput(), self._progress()
        self._release(out)
        self._take(out, self.trainer.drain())
        self._judge(out, lambda b: True)
        return self._counted(out, before)

    def release(self) -> TenantOutput:
        """The first half of `end`: release everything held and queue the partial batch,
        training only what a full queue or a snapshot boundary trains anyway. An engine that
        ends many tenants at once calls this for each, then `end` for each, so that their last
        batches can train together (state/train_group.py); the outcome is that of `end`."""
        out, before = TenantOutput(), self._progress()
        self._release(out)
        return self._counted(out, before)

    def _release(self, out: TenantOutput) -> None:
        flushed = self.replay.flush()
        out.replay.extend(flushed)
        for r in flushed.released:
            self._train(out, r)
        self.trainer.close_batch()

    def end_stats(self) -> list[str]:
        """The `upm.tenant.stats` records an engine emits when the input ends."""
        return [replay_stats(self.replay), trainer_stats(self.trainer), drift_stats(self.drift)]

    def timers(self, drain_after: int | None = None) -> list[int]:
        """Event times the engine should have a timer at now: the drain of the ready batches and
        the next drift judgement. Setting one twice is harmless; one no longer listed may be
        deleted. With `drain_after` (the engine's watermark) the drain is no earlier than just
        after it: an engine that fires every due timer in one pass (Flink) then drains in its
        next pass, after every tenant's arrivals of this one made their batches ready, so the
        tenants draining together train in one call (state/train_group.py). A drain only trains
        what is ready, so when it happens changes no result."""
        # the drift boundaries to judge are tracked here (`_pending`, cheaper than asking the
        # DriftWindow for its `next_timer` after every event)
        drain = self.trainer.next_timer()
        if drain is not None and drain_after is not None:
            drain = max(drain, drain_after + 1)
        out = [t for t in (self.replay.next_timer(), drain) if t is not None]
        if self._pending:
            out.append(self.drift.timer_time(min(self._pending)))
        return out

    def next_timer(self) -> int | None:
        return min(self.timers(), default=None)

    # -- internals -------------------------------------------------------------------------

    def _progress(self) -> tuple[int, int]:
        return self.trainer.trained, self.trainer.counters["steps"]

    def _counted(self, out: TenantOutput, before: tuple[int, int]) -> TenantOutput:
        trained, steps = self._progress()
        out.trained, out.steps = trained - before[0], steps - before[1]
        return out

    def _train(self, out: TenantOutput, rec) -> None:
        ts = self.trainer
        if (self.before_first_record and ts.counters["windows"] == 0
                and ts.counters["feedback"] == 0):
            self.before_first_record(ts, rec.event_time)
        if isinstance(rec, Feedback):
            self._take(out, ts.on_feedback(rec))
        else:
            self._take(out, ts.on_window(rec))

    def _take(self, out: TenantOutput, t: TrainerOutput) -> None:
        out.refused += t.refused
        if not t.deltas and not t.snapshots:
            return
        self._pending |= self.drift.add_all(t.deltas)
        out.deltas += t.deltas
        out.snapshots += t.snapshots
        if t.snapshots and self.after_snapshot:
            self.after_snapshot(self.trainer)

    def _judge(self, out: TenantOutput, due) -> None:
        for b in sorted(b for b in self._pending if due(b)):
            self._pending.discard(b)
            d = self.drift.evaluate(b)
            out.drift.scores += d.scores
            out.drift.quarantines += d.quarantines
            out.drift.recoveries += d.recoveries

    # -- engine memory ---------------------------------------------------------------------

    def park(self) -> None:
        """Compress what is big and idle (the trainer's arrays); an engine that holds many
        tenants parks the ones it is not working on. The next event that needs them unparks
        them (one that only waits in the replay buffer does not)."""
        self.trainer.park()

    # -- engine state ----------------------------------------------------------------------

    def drain_changes(self, prefix: str = "") -> tuple[dict[str, bytes], list[str]]:
        puts: dict[str, bytes] = {}
        gone: list[str] = []
        for name, part in (("r.", self.replay), ("t.", self.trainer), ("d.", self.drift)):
            p, g = part.drain_changes(prefix + name)
            puts.update(p)
            gone += g
        return puts, gone

    def parts(self) -> dict[str, bytes]:
        out = {}
        for prefix, part in (("r.", self.replay), ("t.", self.trainer), ("d.", self.drift)):
            out.update({prefix + k: v for k, v in part.parts().items()})
        return out

    def to_bytes(self) -> bytes:
        return pickle.dumps(self.parts(), 5)

    @classmethod
    def from_bytes(cls, blob: bytes, config: UpmConfig) -> "TenantPipeline":
        return cls.from_parts(pickle.loads(blob), config)

    @classmethod
    def from_parts(cls, parts: dict[str, bytes], config: UpmConfig) -> "TenantPipeline":
        split: dict[str, dict[str, bytes]] = {"r.": {}, "t.": {}, "d.": {}}
        for k, v in parts.items():
            split[k[:2]][k[2:]] = v
        c = config.for_tenant(ReplayBuffer.tenant_of(split["r."]))
        p = cls(ReplayBuffer.from_parts(split["r."], c.replay),
                TrainerState.from_parts(split["t."], c.trainer),
                DriftWindow.from_parts(split["d."], c.drift))
        p._pending = {(i + 1) * p.drift.config.evaluation_interval_ms for i in p.drift.sub
                      if (i + 1) * p.drift.config.evaluation_interval_ms > p.drift.evaluated_until}
        return p
