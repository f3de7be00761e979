"""A tenant's decisions depend on its own arrivals only: engine timers may fire at any event time
(the watermark is one clock for every tenant, and a window of another tenant from a wrong clock
moves it arbitrarily far), and the windows released, their order, the gaps and every shadow
prediction stay those of a run with no timer at all. A tenant that goes quiet releases what it
holds, in order."""

import dataclasses

from hypothesis import given, settings, strategies as st

from runners.embedded import DEMO_SCENARIO, demo_config
from state.config import UpmConfig
from state.parse import parse_message
from state.records import Feedback
from state.scenario import generate
from state.tenant import TenantPipeline

SPEC = dataclasses.replace(DEMO_SCENARIO, tenants=1, windows_per_tenant=400, seed=3,
                           swap_rate=0.2,
                           late_rate=0.02)
LINES, EXPECTED = generate(SPEC)
RECORDS = [p.record for p in map(parse_message, LINES) if p.ok]
DAY_MS = 86_400_000


def run(timers: dict[int, int]) -> TenantPipeline:
    """Feed RECORDS; before record i, fire a timer at RECORDS[i]'s event time + timers[i]."""
    p = TenantPipeline.new(RECORDS[0].tenant_id, demo_config())
    outs = []
    for i, rec in enumerate(RECORDS):
        if i in timers:
            outs.append(p.on_timer(rec.event_time + timers[i]))
        outs.append(p.on_feedback(rec) if isinstance(rec, Feedback) else p.on_window(rec))
    outs.append(p.end())
    p.outcome = ([w.window_id for o in outs for w in o.replay.released],
                 [(g.before_window_id, g.after_window_id) for o in outs for g in o.replay.gaps],
                 [d.shadow_prediction for o in outs for d in o.deltas],
                 dict(p.replay.counters))
    return p


REFERENCE = run({})


def test_the_scenario_has_windows_out_of_order_late_windows_and_gaps():
    released, gaps, deltas, counters = REFERENCE.outcome
    arrived = [r.window_id for r in RECORDS if not isinstance(r, Feedback)]
    assert EXPECTED.tenants[RECORDS[0].tenant_id]["gaps"] == len(gaps) > 0
    assert counters["late"] > 0 and counters["reordered"] == 0 and len(deltas) > 300
    assert released != [wid for wid in arrived if wid in set(released)]


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.integers(0, len(RECORDS) - 1),
                       st.sampled_from([0, 5_000, 60_000, DAY_MS, 30 * DAY_MS]), max_size=40))
def test_timers_at_any_event_time_change_no_decision(timers):
    assert run(timers).outcome == REFERENCE.outcome


def test_a_quiet_tenant_releases_what_it_holds_in_order():
    p = TenantPipeline.new("acme", demo_config())
    windows = [r for r in RECORDS if not isinstance(r, Feedback)][:40]
    for rec in windows:
        p.on_window(rec)
    held = p.replay.held
    assert held > 0
    out = p.on_quiet(windows[-1].event_time)
    assert len(out.replay.released) == held and p.replay.held == 0
    ends = [w.window_end for w in out.replay.released]
    assert ends == sorted(ends)


# Snapshots and drift judgements within the 400 windows.
BATCH_CONFIG = UpmConfig.from_dict({"trainer": {"snapshot_interval": 50},
                                    "drift": {"window_duration_ms": 120_000, "sample_size": 20}},
                                   demo_config())


def run_in_batches(cuts: set[int], timers: set[int]) -> tuple:
    """Feed RECORDS as batches (`on_records`) that end before each index in `cuts`, with a drift
    timer before each index in `timers` (a subset of `cuts`: an engine hands a batch over before
    a timer fires); the whole outcome, snapshots and drift records included."""
    p = TenantPipeline.new(RECORDS[0].tenant_id, BATCH_CONFIG)
    outs, batch = [], []
    for i, rec in enumerate(RECORDS):
        if i in cuts and batch:
            outs.append(p.on_records(batch))
            batch = []
        if i in timers:
            outs.append(p.on_timer(rec.event_time - 60_000))
        batch.append(rec)
    outs.append(p.on_records(batch))
    outs.append(p.end())
    return ([w.window_id for o in outs for w in o.replay.released],
            [d.shadow_prediction for o in outs for d in o.deltas],
            [(s.manifest["version"], s.manifest["windows_trained"],
              {k: v.tobytes() for k, v in s.arrays.items()}) for o in outs for s in o.snapshots],
            [(d.window_end, d.drift_p95, d.sample_count) for o in outs for d in o.drift.scores],
            [q.drift_window_id for o in outs for q in o.drift.quarantines],
            sum(o.trained for o in outs), dict(p.replay.counters), dict(p.trainer.counters))


@settings(max_examples=10, deadline=None)
@given(st.sets(st.integers(1, len(RECORDS) - 1), max_size=30), st.data())
def test_arrivals_in_batches_decide_as_one_at_a_time(cuts, data):
    """An engine may hand a tenant's arrivals over in batches (the Flink job does): any split,
    with timers between batches, gives what one call per arrival with the same timers gives."""
    timers = data.draw(st.sets(st.sampled_from(sorted(cuts)))) if cuts else set()
    every = set(range(len(RECORDS)))
    one_by_one = run_in_batches(every, timers)
    assert one_by_one[2] and one_by_one[3], "snapshots are cut and drift is judged"
    assert run_in_batches(cuts, timers) == one_by_one
