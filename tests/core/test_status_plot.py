"""`upm status --plot`: a second run into the same store is its own line, in event-time order,
and a quarantine raised again by it is listed once."""

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
