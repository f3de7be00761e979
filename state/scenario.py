"""The built-in generator: a synthetic, seeded stream of FeatureWindow JSON lines, in arrival
order, together with the accounting a correct job must report for it.

Each tenant has its own linear concept y = w.x + b + noise over a few named features, one window
per `cadence_ms`, windows tiling time. Arrival order is event time plus small jitter, with:
- duplicates: a second copy of a window a few seconds after the first (within the dedup horizon);
- out-of-order: adjacent windows swapped;
- late: a window delivered `late_delay_ms` after its event time (beyond the late tolerance);
- unlabeled: a window sent without its label; its Feedback follows `feedback_delay_ms` later,
  except for a share that never gets one (they stay pending);
- malformed messages (bad JSON, NaN, unsafe tenant ids, missing fields): dead letters;
- concept change: for `drift_tenant`, w flips sign at `drift_at` (fraction of its windows).

Pure and deterministic: same spec, same lines.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from state.records import ms_to_rfc3339

FEATURE_NAMES = ("clicks", "dwell_s", "scroll_depth", "sessions", "cart_adds", "latency_ms",
                 "errors", "searches")
TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
DEFAULT_START_MS = 1_795_305_600_000  # 2026-11-22T00:00:00Z


@dataclass(frozen=True)
class ScenarioSpec:
    tenants: int = 4
    windows_per_tenant: int = 3000
    cadence_ms: int = 1000
    start_ms: int = DEFAULT_START_MS
    duplicate_rate: float = 0.05
    swap_rate: float = 0.05
    late_rate: float = 0.004
    late_delay_ms: int = 180_000
    unlabeled_rate: float = 0.02
    never_labeled_share: float = 0.25
    feedback_delay_ms: int = 15_000
    malformed_rate: float = 0.002
    drift_tenant: int | None = 0
    drift_at: float = 0.6
    noise: float = 0.03
    seed: int = 7

    def tenant_names(self) -> list[str]:
        if self.tenants <= len(TENANT_NAMES):
            return list(TENANT_NAMES[:self.tenants])
        return [f"tenant-{i:03d}" for i in range(self.tenants)]


@dataclass
class Expected:
    """What a correct job reports for the scenario, per tenant and in total."""
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)
    unattributed_dead_letters: int = 0
    drift_tenant: str | None = None

    def totals(self) -> dict[str, int]:
        keys = ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending",
                "feedback_in")
        tot = {k: sum(t[k] for t in self.tenants.values()) for k in keys}
        tot["dead_letters"] += self.unattributed_dead_letters
        tot["windows_in"] += self.unattributed_dead_letters
        return tot

    def to_dict(self) -> dict:
        return {"tenants": self.tenants, "totals": self.totals(), "drift_tenant": self.drift_tenant}


def _window(tenant: str, j: int, spec: ScenarioSpec, x: np.ndarray, y: float | None) -> dict:
    start = spec.start_ms + j * spec.cadence_ms
    d = {"window_id": f"{tenant}-w{j:07d}", "tenant_id": tenant,
         "window_start": ms_to_rfc3339(start), "window_end": ms_to_rfc3339(start + spec.cadence_ms),
         "features": {n: round(float(v), 6) for n, v in zip(FEATURE_NAMES, x)}}
    if y is not None:
        d["label"] = round(float(y), 6)
    return d


def generate(spec: ScenarioSpec = ScenarioSpec()) -> tuple[list[str], Expected]:
    """The scenario's messages in arrival order, and what a correct job reports for them."""
    timed, expected = generate_timed(spec)
    return [line for _, line in timed], expected


def generate_timed(spec: ScenarioSpec = ScenarioSpec()) -> tuple[list[tuple[int, str]], Expected]:
    """As `generate`, each message with its arrival time (ms): what a producer that sends each
    message as it arrives stamps it with (a Kafka record's CreateTime)."""
    rng = np.random.default_rng(spec.seed)
    events: list[tuple[float, int, str]] = []  # (arrival ms, tiebreak, line)
    expected = Expected()
    seq = 0

    def emit(arrival: float, line: str) -> None:
        nonlocal seq
        events.append((arrival, seq, line))
        seq += 1

    names = spec.tenant_names()
    if spec.drift_tenant is not None:
        expected.drift_tenant = names[spec.drift_tenant]
    for ti, tenant in enumerate(names):
        n = spec.windows_per_tenant
        w = rng.normal(0.0, 0.3, len(FEATURE_NAMES))
        b = rng.normal(0.0, 0.2)
        xs = rng.normal(0.0, 1.0, (n, len(FEATURE_NAMES)))
        flip_at = int(n * spec.drift_at) if ti == spec.drift_tenant else n
        ys = np.where(np.arange(n) < flip_at, xs @ w, -(xs @ w)) + b + rng.normal(0, spec.noise, n)
        counts = dict(windows_in=0, trained=0, duplicates=0, late=0, dead_letters=0, pending=0,
                      feedback_in=0, gaps=0)
        arrival = spec.start_ms + (np.arange(n) + 1) * spec.cadence_ms + rng.uniform(0, 200, n)
        # Out-of-order: swap arrival of adjacent windows (never touching a late one).
        late = rng.random(n) < spec.late_rate
        late[: n // 20] = False  # the tenant's frontier must exist before a window can be late
        late[n - spec.late_delay_ms // spec.cadence_ms:] = False  # keep the frontier moving past it
        swap = rng.random(n) < spec.swap_rate
        for j in range(n - 1):
            if swap[j] and not (late[j] or late[j + 1]):
                arrival[j], arrival[j + 1] = arrival[j + 1], arrival[j]
        unlabeled = rng.random(n) < spec.unlabeled_rate
        never = unlabeled & (rng.random(n) < spec.never_labeled_share)
        dup = (rng.random(n) < spec.duplicate_rate) & ~late
        for j in range(n):
            t_arr = arrival[j] + (spec.late_delay_ms if late[j] else 0)
            line = json.dumps(_window(tenant, j, spec, xs[j], None if unlabeled[j] else ys[j]))
            emit(t_arr, line)
            counts["windows_in"] += 1
            if dup[j]:
                emit(t_arr + rng.uniform(500, 4000), line)
                counts["windows_in"] += 1
                counts["duplicates"] += 1
            if late[j]:
                counts["late"] += 1
            elif unlabeled[j] and never[j]:
                counts["pending"] += 1
            else:
                counts["trained"] += 1
            if unlabeled[j] and not never[j]:
                obs = spec.start_ms + (j + 1) * spec.cadence_ms + spec.feedback_delay_ms
                emit(obs + rng.uniform(0, 200) + (spec.late_delay_ms if late[j] else 0),
                     json.dumps({"window_id": f"{tenant}-w{j:07d}", "tenant_id": tenant,
                                 "label": round(float(ys[j]), 6),
                                 "observed_at": ms_to_rfc3339(obs)}))
                counts["feedback_in"] += 1
        # Malformed messages that still name this tenant.
        for j in np.flatnonzero(rng.random(n) < spec.malformed_rate):
            bad = _window(tenant, int(j), spec, xs[j], ys[j])
            bad["window_id"] = f"{tenant}-bad{j:07d}"
            kind = j % 3
            if kind == 0:
                text = json.dumps(bad).replace(f'"clicks": {bad["features"]["clicks"]}',
                                               '"clicks": NaN')
            elif kind == 1:
                bad.pop("window_end")
                text = json.dumps(bad)
            else:
                bad["features"]["clicks"] = "many"
                text = json.dumps(bad)
            emit(arrival[j] + 1, text)
            counts["windows_in"] += 1
            counts["dead_letters"] += 1
        # Each run of consecutive late windows leaves one hole in the released sequence.
        counts["gaps"] = int(np.sum(late[1:] & ~late[:-1]) + late[0])
        expected.tenants[tenant] = counts
    # Malformed messages with no usable tenant.
    total = spec.tenants * spec.windows_per_tenant
    n_bad = int(math.ceil(total * spec.malformed_rate / 2))
    for k in range(n_bad):
        t = spec.start_ms + int(rng.uniform(0, spec.windows_per_tenant * spec.cadence_ms))
        text = ['{"window_id": "x", "tenant_id": ', 'not json at all',
                json.dumps({"window_id": f"evil-{k}", "tenant_id": "../etc",
                            "window_start": 0, "window_end": 1, "features": {}})][k % 3]
        emit(t, text)
        expected.unattributed_dead_letters += 1
    events.sort(key=lambda e: (e[0], e[1]))
    return [(int(t), line) for t, _, line in events], expected


def spec_from_dict(d: dict) -> ScenarioSpec:
    return ScenarioSpec(**{k: v for k, v in d.items() if k in asdict(ScenarioSpec())})
