"""The UPM job run in-process with no engine: the reference the engines are compared against,
and the "trainer core alone" of the benchmark.

It feeds messages, in order, through the same core objects the engine adapters use (parse ->
TenantPipeline: ReplayBuffer -> TrainerState -> DriftWindow), with an end-of-input flush. Drift
boundaries are evaluated once every message is in, in boundary order, as an engine's timers
fire at the end of a bounded input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from model.snapshot import Snapshot
from state.config import UpmConfig
from state.parse import dead_letter, parse_message
from state.records import Feedback, QuarantineRecord, ShadowDelta
from state.tenant import TenantPipeline
from state.tenant_cache import TenantLimit
from state.train_group import TrainGroup


@dataclass
class TenantRun:
    pipeline: TenantPipeline
    snapshots: list[Snapshot] = field(default_factory=list)
    quarantines: list[QuarantineRecord] = field(default_factory=list)
    late_windows: list = field(default_factory=list)  # the LateWindow records
    dead_letters: int = 0

    @property
    def replay(self):
        return self.pipeline.replay

    @property
    def trainer(self):
        return self.pipeline.trainer

    @property
    def drift(self):
        return self.pipeline.drift


@dataclass
class LocalRun:
    tenants: dict[str, TenantRun] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)  # reasons, all tenants
    deltas: list[ShadowDelta] = field(default_factory=list)
    keep_deltas: bool = False
    group: TrainGroup = field(default_factory=TrainGroup)  # the tenants train together

    def counts(self, tenant: str) -> dict[str, int]:
        t = self.tenants[tenant]
        return {"windows_in": t.replay.counters["received"] + t.dead_letters
                - t.trainer.counters["label_refused"],
                "trained": t.trainer.trained, "duplicates": t.replay.counters["duplicates"],
                "late": t.replay.counters["late"], "dead_letters": t.dead_letters,
                "pending": t.trainer.pending, "gaps": t.replay.counters["gaps"],
                "snapshots": len(t.snapshots), "quarantines": len(t.quarantines)}


def run_local(messages: Iterable[str | bytes], config: UpmConfig = UpmConfig(),
              keep_deltas: bool = False) -> LocalRun:
    run = LocalRun(keep_deltas=keep_deltas)

    def tenant(tid: str) -> TenantRun:
        t = run.tenants.get(tid)
        if t is None:
            t = run.tenants[tid] = TenantRun(TenantPipeline.new(tid, config).train_in(run.group))
        return t

    def take(t: TenantRun, out) -> None:
        t.snapshots += out.snapshots
        t.quarantines += out.drift.quarantines
        t.late_windows += out.replay.late
        refused = out.replay.refused + out.refused
        t.dead_letters += len(refused)
        run.dead_letters += [reason for _, reason in refused]
        if run.keep_deltas:
            run.deltas += out.deltas

    limit = TenantLimit(config.scale.max_tenants)
    for raw in messages:
        parsed = parse_message(raw, config.source.max_features)
        if not parsed.ok:
            run.dead_letters.append(parsed.reason)
            dl = dead_letter(raw, parsed.reason, "local", 0)
            if dl.tenant_id:
                tenant(dl.tenant_id).dead_letters += 1
            continue
        rec = parsed.record
        if not limit.admits(rec.tenant_id):
            run.dead_letters.append(limit.reason)
            tenant(rec.tenant_id).dead_letters += 1
            continue
        t = tenant(rec.tenant_id)
        take(t, t.pipeline.on_feedback(rec) if isinstance(rec, Feedback)
             else t.pipeline.on_window(rec))
    for t in run.tenants.values():  # (all released first: their last batches train together)
        take(t, t.pipeline.release())
    for t in run.tenants.values():
        take(t, t.pipeline.end())
    return run
