import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from state.drift import DriftConfig, DriftWindow, drift_score
from state.records import ShadowDelta
from state.sketch import MIN_VALUE, QuantileSketch


def assert_close(sketch_value, exact):
    # values under MIN_VALUE count as zero (state/sketch.py): hypothesis found 4.3e-12 -> 0.0
    assert abs(sketch_value - exact) <= 0.01 * abs(exact) + MIN_VALUE, (sketch_value, exact)


@pytest.mark.parametrize("seed", range(5))
def test_p95_within_one_percent_on_random_streams(seed):
    rng = np.random.default_rng(seed)
    for values in (rng.random(5000), rng.beta(0.5, 3, 20000), rng.exponential(0.05, 3000).clip(0, 1)):
        sk = QuantileSketch()
        sk.extend(values)
        assert_close(sk.quantile(0.95), np.quantile(values, 0.95))


@pytest.mark.parametrize("values", [
    [0.1] * 95 + [0.9] * 5,                 # a cliff right at the 95% rank
    [0.0] * 990 + [1.0] * 10,               # mostly zeros
    [0.0] * 1000,                           # all zeros
    [1e-6 * (i + 1) for i in range(1000)],  # tiny values
    [0.5],                                  # one sample
    list(np.linspace(0, 1, 101)) * 7,       # repeated grid
])
def test_p95_within_one_percent_on_adversarial_streams(values):
    sk = QuantileSketch()
    sk.extend(values)
    assert_close(sk.quantile(0.95), float(np.quantile(values, 0.95)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=400),
       st.integers(1, 4))
def test_merged_sub_sketches_match_numpy(values, parts):
    chunks = np.array_split(np.array(values), parts)
    merged = QuantileSketch()
    for c in chunks:
        sk = QuantileSketch()
        sk.extend(c)
        merged.merge(QuantileSketch.from_bytes(sk.to_bytes()))
    assert merged.count == len(values)
    assert_close(merged.quantile(0.95), float(np.quantile(values, 0.95)))


def test_drift_score_kinds():
    assert drift_score(0.5, 0.7) == pytest.approx(0.2)
    assert drift_score(5.0, 0.0) == 1.0
    assert drift_score(3.0, 1.0, scale=10) == pytest.approx(0.2)
    assert drift_score(0.9, 1.0, "probability") == pytest.approx(0.1)
    assert drift_score([1, 0], [1, 0]) == pytest.approx(0.0)
    assert drift_score([1, 0], [-1, 0]) == pytest.approx(1.0)
    assert drift_score({"a": 1.0}, {"b": 1.0}) == pytest.approx(0.5)


CFG = DriftConfig(window_duration_ms=600_000, evaluation_interval_ms=60_000, sample_size=100,
                  drift_threshold=0.2)


def deltas(scores, start=0, step=1000, version=1):
    return [ShadowDelta("acme", "acme-trainer", f"w{start + i}", 0, 0, s, start + i * step, version,
                        f"acme-v{version:06d}") for i, s in enumerate(scores)]


def run(dw, ds):
    bounds = set()
    for d in ds:
        b = dw.add(d)
        if b is not None:
            bounds.add(b)
    outs = [dw.evaluate(b) for b in sorted(bounds)]
    return outs


def test_rolling_p95_matches_exact_over_the_window():
    rng = np.random.default_rng(1)
    scores = rng.random(1800) * 0.3
    dw = DriftWindow("acme", CFG)
    outs = run(dw, deltas(scores))
    last = [o.scores[0] for o in outs if o.scores][-1]
    # window [boundary - 600 s, boundary) with one sample per second
    in_window = scores[(last.window_end - 600_000) // 1000:last.window_end // 1000]
    assert last.sample_count == len(in_window)
    assert_close(last.drift_p95, float(np.quantile(in_window, 0.95)))
    assert len(dw.sub) <= 11  # bounded memory: one sketch per sub-window in the window


def test_no_quarantine_below_sample_size():
    dw = DriftWindow("acme", DriftConfig(**{**CFG.__dict__, "sample_size": 10_000}))
    outs = run(dw, deltas([0.9] * 1500))
    assert not any(o.quarantines for o in outs)
    assert any(o.scores and o.scores[0].drift_p95 > 0.8 for o in outs)


def test_one_quarantine_per_episode_then_recovery_then_new_episode():
    scores = [0.05] * 900 + [0.8] * 900 + [0.05] * 1200 + [0.9] * 900
    dw = DriftWindow("acme", CFG)
    outs = run(dw, deltas(scores))
    q = [x for o in outs for x in o.quarantines]
    r = [x for o in outs for x in o.recoveries]
    assert len(q) == 2 and len(r) == 1
    assert q[0].quarantined_at < r[0].recovered_at < q[1].quarantined_at
    assert q[0].drift_p95 > 0.2 and q[0].sample_count >= 100
    assert q[0].recommendation == "rollback" and q[0].snapshot_id == "acme-v000001"


def test_warmup_predictions_are_not_judged():
    dw = DriftWindow("acme", CFG)
    outs = run(dw, deltas([0.9] * 1000, version=0))
    assert dw.counters["warmup"] == 1000 and not any(o.quarantines or o.scores for o in outs)


def test_quarantine_disabled_and_state_round_trip():
    dw = DriftWindow("acme", DriftConfig(**{**CFG.__dict__, "quarantine_enabled": False}))
    ds = deltas([0.9] * 700)
    run(dw, ds[:350])
    dw2 = DriftWindow.from_bytes(dw.to_bytes(), dw.config)
    outs = run(dw2, ds[350:])
    assert not any(o.quarantines for o in outs) and dw2.counters["samples"] == 700
