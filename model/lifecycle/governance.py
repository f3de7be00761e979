"""Governance actions on the registry: promote, rollback, and the reaction to a quarantine.

Every action is checked first (nothing changes when a check fails: PromotionRefused lists every
failed rule with its reason), then applied in one compare-and-swap registry update that also
appends history, then announced as events on the sink:
`ai.upm.snapshot.activated` and `fl.artifact.promoted` for a promotion, `ai.upm.rollback` for a
rollback. Promote and rollback are idempotent: repeating one changes nothing and emits nothing.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from model.lifecycle.events import ArtifactPromoted, RolledBack, SnapshotActivated
from model.lifecycle.policy import Policy
from model.lifecycle.registry import STAGES, Artifact, Registry, TenantView, tenant_view
from model.lifecycle.signing import SignatureError, Verifier
from model.snapshot import sha256_hex


class GovernanceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Failure:
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.reason}"


class PromotionRefused(GovernanceError):
    def __init__(self, tenant: str, stage: str, artifact_id: str, failures: list[Failure]):
        self.failures = failures
        lines = "\n".join(f"  - {f}" for f in failures)
        super().__init__(f"promotion of {artifact_id} to {tenant}/{stage} refused:\n{lines}")


def events_path(store_root: str | Path) -> Path:
    """Where governance events of a store go by default: beside a local store; for an object
    store, in the local directory $UPM_EVENTS_DIR (default ./upm-events)."""
    if "://" in str(store_root):
        return Path(os.environ.get("UPM_EVENTS_DIR", "./upm-events")) / "governance.jsonl"
    return Path(store_root) / "events" / "governance.jsonl"


class JsonLinesSink:
    """Events as JSON lines appended to one file (thread-safe, one write per event)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def emit(self, event: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a") as f:
            f.write(line)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]


class Governance:
    def __init__(self, registry: Registry, store, policy: Policy, verifier: Verifier, sink):
        self.registry = registry
        self.store = store
        self.policy = policy
        self.verifier = verifier
        self.sink = sink

    # -- checks ----------------------------------------------------------------------------

    def check(self, tenant: str, stage: str, artifact_id: str, actor: str, role: str | None,
              ack: bool) -> list[Failure]:
        t = self.registry.view(tenant)
        a = t.artifact(artifact_id) if t else None
        if a is None:
            return [Failure("exists", f"{artifact_id} is not a registered artifact of {tenant}")]
        rule = self.policy.rule(stage)
        prev = STAGES[STAGES.index(stage) - 1] if stage != "staging" else None
        fails: list[Failure] = []
        now = self.registry.now_ms()
        for check in rule.checks:
            if check == "order" and prev and t.pointer(prev) != artifact_id:
                fails.append(Failure("order", f"{artifact_id} is not in {prev} "
                                     f"({prev} points to {t.pointer(prev)})"))
            elif check == "sha256":
                try:
                    actual = sha256_hex(self.store.get_bytes(a.uri))
                except OSError as e:
                    fails.append(Failure("sha256", f"cannot read {a.uri}: {e}"))
                else:
                    if actual != a.sha256:
                        fails.append(Failure("sha256", f"stored bytes hash to {actual}, "
                                             f"registered {a.sha256}"))
            elif check == "signature":
                try:
                    self.verifier.verify(artifact_id, a.sha256, a.signature)
                except SignatureError as e:
                    fails.append(Failure("signature", str(e)))
            elif check == "drift":
                p95, n = a.metrics.get("drift_p95"), a.metrics.get("drift_samples", 0)
                if n < self.policy.min_drift_samples:
                    fails.append(Failure("drift", f"{n} drift samples < {self.policy.min_drift_samples}"
                                         " required"))
                elif self.policy.max_drift_p95 is not None and (
                        p95 is None or p95 > self.policy.max_drift_p95):
                    fails.append(Failure("drift", f"drift p95 {p95} > {self.policy.max_drift_p95}"))
                if a.quarantined:
                    fails.append(Failure("drift", f"{artifact_id} is quarantined"))
            elif check == "champion":
                fails += self._champion(t, a)
            elif check == "soak" and prev:
                since = t.since(prev)
                held = now - since if since is not None and t.pointer(prev) == artifact_id else 0
                if held < rule.min_soak_ms:
                    fails.append(Failure("soak", f"{held} ms in {prev} < {rule.min_soak_ms} ms"))
            elif check == "allowlist" and not ({tenant, "*"} & set(rule.allowlist)):
                fails.append(Failure("allowlist", f"tenant {tenant} is not in the {stage} "
                                     "allowlist (enable features.unified_model for it)"))
            elif check == "role" and role not in rule.roles:
                fails.append(Failure("role", f"actor {actor} with role {role!r} may not promote "
                                     f"to {stage} (roles: {', '.join(rule.roles)})"))
            elif check == "ack" and not ack:
                fails.append(Failure("ack", f"promotion to {stage} needs an explicit ACK (--ack)"))
        if a.quarantined and "drift" not in rule.checks:
            # a quarantine holds at every stage, whatever the policy lists for it
            fails.append(Failure("quarantine", f"{artifact_id} is quarantined"))
        return fails

    def _champion(self, t: TenantView, a: Artifact) -> list[Failure]:
        """The champion check (model/lifecycle/policy.py): the artifact against `active`, on the same
        windows, as the job recorded it (state/challenge.py)."""
        artifact_id, active = a.id, t.pointer("active")
        if active is None or active == artifact_id:
            return []
        ch = a.metrics.get("challenge")
        if not ch or ch.get("champion_snapshot_id") != active:
            seen = f" (it was compared with {ch['champion_snapshot_id']})" if ch else ""
            return [Failure("champion", f"{artifact_id} has not been scored against active "
                            f"{active} on the same windows{seen}: the job records that in the "
                            f"interval after the artifact was cut, while {active} is active")]
        cand, champ = ch["candidate"], ch["champion"]
        metric = self.policy.champion_metric
        if metric == "auto":
            metric = "log_loss" if "log_loss" in cand else "mae"
        n, need = cand.get("n", 0), self.policy.champion_min_samples
        x, y = cand.get(metric), champ.get(metric)
        if n < need:
            return [Failure("champion", f"{artifact_id} was compared with {active} on {n} "
                            f"windows < {need} required")]
        if x is None or y is None:
            return [Failure("champion", f"no {metric} for {artifact_id} ({x}) or {active} ({y})")]
        worse = y - x if metric == "accuracy" else x - y  # accuracy: higher is better
        allowed = self.policy.champion_tolerance * abs(y)
        if worse > allowed:
            return [Failure("champion", f"{metric} {x:.4f} on the same {n} windows as active "
                            f"{active}'s {y:.4f}: worse by {worse:.4f} > {allowed:.4f} allowed "
                            f"(tolerance {self.policy.champion_tolerance:g} of the active's)")]
        return []

    # -- actions ---------------------------------------------------------------------------

    def default_candidate(self, tenant: str, stage: str) -> str:
        t = self.registry.view(tenant)
        newest = t.newest() if t else None
        if newest is None:
            raise GovernanceError(f"tenant {tenant} has no registered artifacts")
        if stage == "staging":
            return newest.id
        prev = STAGES[STAGES.index(stage) - 1]
        if not t.pointer(prev):
            raise GovernanceError(f"{tenant}/{prev} is empty: nothing to promote to {stage}")
        return t.pointer(prev)

    def promote(self, tenant: str, stage: str, artifact_id: str | None, actor: str,
                reason: str, role: str | None = None, ack: bool = False) -> dict | None:
        """Point `stage` at the artifact. Returns the activation event, or None if it already
        pointed there. Raises PromotionRefused (nothing changed) if a check fails."""
        if stage not in STAGES:
            raise GovernanceError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
        artifact_id = artifact_id or self.default_candidate(tenant, stage)
        if self.registry.pointer(tenant, stage) == artifact_id:
            return None
        fails = self.check(tenant, stage, artifact_id, actor, role, ack)
        if fails:
            raise PromotionRefused(tenant, stage, artifact_id, fails)

        def change(doc):
            t = tenant_view(doc, tenant)
            if t.pointer(stage) == artifact_id:
                return None
            from_stage = t.holding(artifact_id, below=stage)
            old = t.point(stage, artifact_id, self.registry.now_ms())
            t.append_history(self.registry.event("promote", from_stage, stage, artifact_id,
                                                 actor, reason, role=role, ack=ack))
            return old, t.artifact(artifact_id)

        applied = self.registry.update(change)
        if applied is None:
            return None
        old, a = applied
        now = self.registry.now_ms()
        activated = SnapshotActivated(artifact_id, tenant, stage, a.version, now, old, actor,
                                      reason)
        self.sink.emit(activated.to_dict())
        self.sink.emit(ArtifactPromoted(tenant, a.uri, stage, a.sha256, actor, reason,
                                        now).to_dict())
        return activated.to_dict()

    def rollback(self, tenant: str, stage: str, actor: str, reason: str,
                 from_artifact: str | None = None) -> dict | None:
        """Point `stage` back at its last known-good artifact (the most recent earlier pointer
        that is not quarantined) and clear the tenant's quarantine. With `from_artifact`, only
        if the stage still points to it (so a repeated rollback is a no-op)."""
        def change(doc):
            t = tenant_view(doc, tenant)
            cur = t.pointer(stage)
            if cur is None or (from_artifact is not None and cur != from_artifact):
                return None
            moved = t.roll_back(stage, self.registry.now_ms())
            if moved is None:
                raise GovernanceError(f"{tenant}/{stage}: no known-good artifact to roll back to "
                                      f"(it has only pointed to {cur})")
            t.append_history(self.registry.event("rollback", stage, stage, moved[1], actor,
                                                 reason, rolled_back_from=cur))
            return moved

        applied = self.registry.update(change)
        if applied is None:
            return None
        cur, target = applied
        event = RolledBack(tenant, stage, cur, target, reason, actor, self.registry.now_ms())
        self.sink.emit(event.to_dict())
        return event.to_dict()

    def on_quarantine(self, record: dict) -> list[dict]:
        """Apply an `ai.upm.drift.quarantine` record: mark the offending artifact, remember the
        quarantine, and roll back every auto-rollback stage that points to that artifact."""
        tenant, sid = record["tenant_id"], record.get("snapshot_id")

        def change(doc):
            t = tenant_view(doc, tenant)
            t.set_quarantine(record)
            t.append_history(self.registry.event(
                "quarantine", None, None, sid, record.get("trainer_id") or "upm-drift-monitor",
                _quarantine_reason(record), drift_window_id=record.get("drift_window_id")))
        self.registry.update(change)
        events = []
        if record.get("recommendation") != "rollback" or not sid:
            return events
        for stage in self.policy.auto_rollback:
            if self.registry.pointer(tenant, stage) == sid:
                try:
                    ev = self.rollback(tenant, stage, "upm-drift-monitor",
                                       f"automatic rollback: quarantine {record['drift_window_id']}",
                                       from_artifact=sid)
                except GovernanceError:
                    continue  # nothing known-good to return to: the quarantine stays recorded
                if ev:
                    events.append(ev)
        return events


def _quarantine_reason(record: dict) -> str:
    if record.get("rule") == "relative":
        return (f"drift mean {record['drift_mean']:.4f} > {record['threshold']:.4f} (reference "
                f"level {record['reference_level']:.4f} of the history before) over "
                f"{record['sample_count']} samples")
    return (f"drift p95 {record['drift_p95']:.3f} > {record['threshold']} "
            f"over {record['sample_count']} samples")
