"""Retention: which snapshots of a tenant may be deleted.

Kept, per tenant:
- every artifact a stage points to, and each stage's last known-good (its most recent earlier
  pointer that is neither quarantined nor rolled back) -- never deleted, whatever else says;
- the `keep_best` artifacts by a metric (lowest `loss` by default);
- every `milestone_every`-th version;
- everything registered within the last `retention_days`.
The rest is deleted: `plan` only lists it; `apply` removes the files and the registry entries
(with a `retire` history event).
"""

from __future__ import annotations

from dataclasses import dataclass

from model.lifecycle.registry import STAGES, Registry, TenantView, tenant_view

DAY_MS = 86_400_000


@dataclass(frozen=True)
class RetentionRule:
    keep_best: int = 5
    metric: str = "loss"
    milestone_every: int = 10
    retention_days: int = 30


def protected(t: TenantView) -> set[str]:
    keep = {a for a in t.stages().values() if a}
    keep.update(a for a in (t.known_good(s) for s in STAGES) if a)
    return keep


def plan(t: TenantView, now_ms: int, rule: RetentionRule) -> list[str]:
    arts = t.artifacts()
    keep = protected(t)
    scored = [a for a in arts if a.metrics.get(rule.metric) is not None]
    scored.sort(key=lambda a: (a.metrics[rule.metric], a.id))
    keep.update(a.id for a in scored[:rule.keep_best])
    for a in arts:
        if rule.milestone_every and a.version and a.version % rule.milestone_every == 0:
            keep.add(a.id)
        if now_ms - (a.registered_at or 0) < rule.retention_days * DAY_MS:
            keep.add(a.id)
    return sorted(a.id for a in arts if a.id not in keep)


def apply(registry: Registry, store, tenant: str, rule: RetentionRule, actor: str) -> list[str]:
    """Delete what `plan` lists, re-planning inside the registry update so a concurrent
    promotion can never have its artifact deleted."""
    def change(doc):
        t = tenant_view(doc, tenant)
        doomed = plan(t, registry.now_ms(), rule)
        for a in doomed:
            t.append_history(registry.event("retire", None, None, a, actor, f"retention {rule}"))
            t.retire(a)
        return doomed
    doomed = registry.update(change)
    t = registry.view(tenant)
    for a in doomed:
        store.delete(t.retired(a)["uri"])
    return doomed
