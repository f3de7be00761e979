"""The end-of-input `upm.tenant.stats` records: one per core object of a tenant, with its
counters and the state a summary reads (what is still held, the version, the scores)."""

from __future__ import annotations

import json


def replay_stats(rb) -> str:
    """The end-of-input `upm.tenant.stats` record of a ReplayBuffer."""
    return _stats("replay", rb.tenant_id, rb.counters, held=rb.held)


def trainer_stats(ts) -> str:
    """The end-of-input `upm.tenant.stats` record of a TrainerState."""
    return _stats("trainer", ts.tenant_id, ts.counters, head=ts.model.head, pending=ts.pending,
                  awaiting_label=len(ts.awaiting), version=ts.version,
                  last_snapshot_id=ts.last_snapshot_id,
                  loss=None if ts.last_loss != ts.last_loss else ts.last_loss,
                  scores=ts.scores())


def drift_stats(dw) -> str:
    """The end-of-input `upm.tenant.stats` record of a DriftWindow."""
    return _stats("drift", dw.tenant_id, dw.counters, in_episode=dw.in_episode,
                  drift_p95=None if dw.last_p95 != dw.last_p95 else dw.last_p95)


def _stats(operator: str, tenant: str, counters: dict, **extra) -> str:
    return json.dumps({"event": "upm.tenant.stats", "operator": operator, "tenant_id": tenant,
                       "counters": counters, **extra}, allow_nan=False, default=str)
