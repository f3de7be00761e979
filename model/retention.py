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

from model.registry import STAGES, Registry, tenant_entry

DAY_MS = 86_400_000


@dataclass(frozen=True)
class RetentionRule:
    keep_best: int = 5
    metric: str = "loss"
    milestone_every: int = 10
    retention_days: int = 30


def protected(t: dict) -> set[str]:
    keep = {a for a in t["stages"].values() if a}
    for s in STAGES:
        for a in reversed(t["previous"].get(s, [])):
            art = t["artifacts"].get(a, {})
            if not (art.get("quarantined") or art.get("rolled_back")):
                keep.add(a)
                break
    return keep


def plan(t: dict, now_ms: int, rule: RetentionRule) -> list[str]:
    arts = t["artifacts"]
    keep = protected(t)
    scored = [a for a in arts if arts[a]["metrics"].get(rule.metric) is not None]
    scored.sort(key=lambda a: (arts[a]["metrics"][rule.metric], a))
    keep.update(scored[:rule.keep_best])
    for a, e in arts.items():
        version = e["lineage"].get("version") or 0
        if rule.milestone_every and version and version % rule.milestone_every == 0:
            keep.add(a)
        if now_ms - (e.get("registered_at") or 0) < rule.retention_days * DAY_MS:
            keep.add(a)
    return sorted(a for a in arts if a not in keep)


def apply(registry: Registry, store, tenant: str, rule: RetentionRule, actor: str) -> list[str]:
    """Delete what `plan` lists, re-planning inside the registry update so a concurrent
    promotion can never have its artifact deleted."""
    def change(doc):
        t = tenant_entry(doc, tenant)
        doomed = plan(t, registry.now_ms(), rule)
        for a in doomed:
            t["history"].append(registry._event("retire", None, None, a, actor,
                                                 f"retention {rule}"))
            t.setdefault("retired", {})[a] = t["artifacts"].pop(a)
        return doomed
    doomed = registry.update(change)
    t = registry.tenant(tenant)
    for a in doomed:
        store.delete(t["retired"][a]["uri"])
    return doomed
