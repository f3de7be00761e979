"""Promotion policy: which checks gate each stage, read from a TOML file.

The default (`DEFAULT_POLICY_TOML`, also what `upm policy show` prints):

    [stage.staging]   checks: sha256, signature
    [stage.shadow]    checks: order, sha256, signature
    [stage.canary]    checks: order, sha256, signature, drift, champion, soak (1 h in shadow),
                      allowlist, role
    [stage.active]    checks: order, sha256, signature, drift, champion, soak (24 h in canary),
                      role, ack
    [drift]           min_samples = 1000 (max_p95: unset)
    [champion]        metric = "auto", tolerance = 0.02, min_samples = 500
    [quarantine]      auto_rollback = ["canary", "active"]

Checks:
- order      the artifact is what the previous stage points to (staging -> shadow -> canary -> active)
- sha256     the stored bytes re-hash to the registered sha256
- signature  the registered signature is a valid Ed25519 signature of a trusted key
- drift      the artifact's predictions were judged by the drift monitor on >= min_samples
             samples, and it is not quarantined (the monitor's `drift.rule` decided); with
             `max_p95` set, also the seeds' absolute ceiling: measured drift p95 <= max_p95 (for
             a probability the p95 of |p - y| is above 0.2 for any classifier wrong on 5% of its
             windows, so a fixed ceiling suits numbers of a known scale, not classifiers)
- champion   scored on the same windows as the snapshot in `active` (state/challenge.py), the
             artifact is not worse than it by more than `tolerance` (relative: 0.02 = 2% of the
             active's value) in `metric` ("auto": log loss for a probability, MAE for a number;
             or accuracy, brier, rmse), over >= min_samples windows. Nothing to compare when
             active is empty or is the artifact.
- soak       the artifact has been in the previous stage for at least min_soak_ms
- allowlist  the tenant is in the canary allowlist (the per-tenant `unified_model` flag)
- role       the actor's role is one of `roles`
- ack        the promotion carries an explicit acknowledgement (--ack)
A quarantined artifact is refused at every stage, whatever its checks list.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field

from model.lifecycle.registry import STAGES

CHECKS = ("order", "sha256", "signature", "drift", "champion", "soak", "allowlist", "role", "ack")
CHAMPION_METRICS = ("auto", "log_loss", "accuracy", "brier", "mae", "rmse")

DEFAULT_POLICY_TOML = """\
[stage.staging]
checks = ["sha256", "signature"]

[stage.shadow]
checks = ["order", "sha256", "signature"]

[stage.canary]
checks = ["order", "sha256", "signature", "drift", "champion", "soak", "allowlist", "role"]
min_soak_ms = 3600000
roles = ["operator", "ml-engineer"]
allowlist = []

[stage.active]
checks = ["order", "sha256", "signature", "drift", "champion", "soak", "role", "ack"]
min_soak_ms = 86400000
roles = ["operator"]

[drift]
min_samples = 1000

[champion]
metric = "auto"
tolerance = 0.02
min_samples = 500

[quarantine]
auto_rollback = ["canary", "active"]
"""


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class StageRule:
    checks: tuple[str, ...] = ()
    min_soak_ms: int = 0
    roles: tuple[str, ...] = ()
    allowlist: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    stages: dict[str, StageRule] = field(default_factory=dict)
    max_drift_p95: float | None = None
    min_drift_samples: int = 1000
    auto_rollback: tuple[str, ...] = ("canary", "active")
    champion_metric: str = "auto"
    champion_tolerance: float = 0.02
    champion_min_samples: int = 500

    def rule(self, stage: str) -> StageRule:
        return self.stages.get(stage, StageRule())

    def with_allowlist(self, tenants) -> "Policy":
        """Add tenants (the config's `features.unified_model`) to the canary allowlist."""
        r = self.rule("canary")
        merged = tuple(sorted(set(r.allowlist) | set(tenants)))
        stages = dict(self.stages, canary=StageRule(r.checks, r.min_soak_ms, r.roles, merged))
        return dataclasses.replace(self, stages=stages)

    @classmethod
    def from_toml(cls, text: str) -> "Policy":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"policy: {e}") from None
        unknown = set(doc) - {"stage", "drift", "champion", "quarantine"}
        if unknown:
            raise PolicyError(f"policy: unknown section(s) {sorted(unknown)}")
        stages = {}
        for name, d in doc.get("stage", {}).items():
            if name not in STAGES:
                raise PolicyError(f"policy: unknown stage {name!r} (stages: {', '.join(STAGES)})")
            bad = set(d) - {"checks", "min_soak_ms", "roles", "allowlist"}
            if bad:
                raise PolicyError(f"policy: unknown key(s) stage.{name}.{sorted(bad)}")
            checks = tuple(d.get("checks", ()))
            for c in checks:
                if c not in CHECKS:
                    raise PolicyError(f"policy: stage.{name}.checks: unknown check {c!r} "
                                      f"(known: {', '.join(CHECKS)})")
            stages[name] = StageRule(checks, int(d.get("min_soak_ms", 0)),
                                     tuple(d.get("roles", ())), tuple(d.get("allowlist", ())))
        drift = doc.get("drift", {})
        q = doc.get("quarantine", {})
        champ = doc.get("champion", {})
        bad = set(champ) - {"metric", "tolerance", "min_samples"}
        if bad:
            raise PolicyError(f"policy: unknown key(s) champion.{sorted(bad)}")
        metric = champ.get("metric", "auto")
        if metric not in CHAMPION_METRICS:
            raise PolicyError(f"policy: champion.metric must be one of "
                              f"{', '.join(CHAMPION_METRICS)}, got {metric!r}")
        tolerance = float(champ.get("tolerance", 0.02))
        if not 0.0 <= tolerance < 1e6:
            raise PolicyError(f"policy: champion.tolerance must be >= 0, got {tolerance}")
        bad = set(drift) - {"max_p95", "min_samples"}
        if bad:
            raise PolicyError(f"policy: unknown key(s) drift.{sorted(bad)}")
        max_p95 = drift.get("max_p95")
        return cls(stages, None if max_p95 is None else float(max_p95),
                   int(drift.get("min_samples", 1000)),
                   tuple(q.get("auto_rollback", ("canary", "active"))), metric, tolerance,
                   int(champ.get("min_samples", 500)))

    @classmethod
    def load(cls, path: str | None) -> "Policy":
        if not path:
            return cls.from_toml(DEFAULT_POLICY_TOML)
        with open(path) as f:
            return cls.from_toml(f.read())
