"""`upm status --plot`: a second run into the same store is its own line, in event-time order,
and a quarantine raised again by it is listed once."""

import pytest
from hypothesis import given, strategies as st

from model.lifecycle.registry import tenant_entry
from runners.governance_cli import plot_status, quarantines, runs_of
from tests.core.governance_helpers import World


@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=20), min_size=1, max_size=4))
def test_runs_are_increasing_and_lose_only_repeated_points(runs):
    trend = [[t, t / 100, 10, "s"] for run in runs for t in sorted(set(run))]
    out = runs_of(trend)
    assert all(a[0] < b[0] for run in out for a, b in zip(run, run[1:]))
    assert [p for run in out for p in run] == [p for i, p in enumerate(trend)
                                               if i == 0 or p != trend[i - 1]]


def test_the_same_input_twice_is_two_runs_and_one_quarantine(tmp_path):
    w = World(tmp_path, n=2)
    a = w.ids()[0]
    for _ in range(2):  # the same event times measured twice, the same snapshot quarantined twice
        for k in range(5):
            w.registry.record_drift("acme", a, 0.1 * k, 100, window_end=1_800_000_000_000 + k)
        w.registry.update(lambda d: tenant_entry(d, "acme")["history"].append(
            {"timestamp": 1, "action": "quarantine", "artifact_id": a, "reason": "drift"}))
    view = w.registry.view("acme")
    assert [len(r) for r in runs_of(view.drift_trend)] == [5, 5]
    assert len(quarantines(view)) == 1
    plot_status(w.registry.views(), str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_the_drift_panel_draws_what_the_rule_in_force_judges(tmp_path):
    """Relative rule: the level and the raise level, not the p95 (a healthy classifier's p95 of
    |p - y| is far above the seeds' 0.2); absolute rule: the p95 and the threshold; a point
    written before the rule was recorded: its p95, labelled so, with no raise line."""
    from runners.governance_cli import drift_series, freshness_rows
    w = World(tmp_path, n=2)
    a = w.ids()[0]
    t0 = 1_800_000_000_000
    for k in range(4):  # a relative run: p95 0.55 (healthy classifier), level 0.1, raise 0.13
        w.registry.record_drift("acme", a, 0.55, 500, t0 + k, level=0.1 + k / 100,
                                raise_at=0.13 if k else None, rule="relative")
    for k in range(3):  # a second run under the absolute rule
        w.registry.record_drift("acme", a, 0.3 + k / 10, 500, t0 + k, level=0.3 + k / 10,
                                raise_at=0.2, rule="absolute")
    w.registry.record_drift("acme", a, 0.4, 500, t0)  # an old store's point
    relative, absolute, old = drift_series(w.registry.view("acme"))
    assert relative["rule"] == "relative"
    assert relative["judged"] == pytest.approx([0.1, 0.11, 0.12, 0.13])
    assert relative["raise_at"] == [None, 0.13, 0.13, 0.13]
    assert absolute["rule"] == "absolute" and absolute["judged"] == pytest.approx([0.3, 0.4, 0.5])
    assert absolute["raise_at"] == [0.2, 0.2, 0.2]
    assert old["rule"] is None and old["judged"] == [0.4] and old["raise_at"] == [None]
    assert "not recorded" in old["label"]
    # no stage points to a snapshot: the freshness panel has no rows (and says so)
    assert freshness_rows(w.registry.view("acme"), t0) == []
    w.gov.promote("acme", "staging", a, "ops", "r")
    ((stage, age, slo),) = freshness_rows(w.registry.view("acme"), w.registry.now_ms() + 5000)
    assert stage == "staging" and age == 5.0 and slo is None
    plot_status(w.registry.views(), str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 10_000
