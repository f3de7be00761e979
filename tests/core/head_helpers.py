"""A tenant with 0/1 labels (and a few labels a classifier cannot take) mixed into a scenario's
lines, for the engine tests of `model.head = auto`."""

import json

import numpy as np

from state.records import ms_to_rfc3339
from state.scenario import ScenarioSpec

TENANT = "classy"


def with_a_classifier_tenant(lines: list[str], spec: ScenarioSpec) -> tuple[list[str], int]:
    """`lines` with one more tenant's windows interleaved in event time (one after every
    `spec.tenants` lines): labels 0/1 from a plane through two features, except every 97th
    window after the first micro-batches, labelled 7.5 (a dead letter: auto chose a
    classifier). Returns the lines and how many windows carry 7.5."""
    rng = np.random.default_rng(spec.seed)
    out, refused = [], 0
    n = len(lines) // spec.tenants
    for i in range(n):
        out += lines[i * spec.tenants:(i + 1) * spec.tenants]
        x = rng.normal(size=3)
        label = float(x[0] - 0.5 * x[1] > 0)
        if i > 50 and i % 97 == 0:
            label, refused = 7.5, refused + 1
        start = spec.start_ms + i * spec.cadence_ms
        out.append(json.dumps({
            "tenant_id": TENANT, "window_id": f"{TENANT}-w{i:07d}",
            "window_start": ms_to_rfc3339(start), "window_end": ms_to_rfc3339(start + spec.cadence_ms),
            "features": {"a": round(float(x[0]), 6), "b": round(float(x[1]), 6),
                         "c": round(float(x[2]), 6)}, "label": label}))
    return out + lines[n * spec.tenants:], refused
