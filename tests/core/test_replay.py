import random

from state.records import FeatureWindow
from state.replay import ReplayBuffer, ReplayConfig

T0 = 1_800_000_000_000


def w(i, label=1.0, wid=None, start=None):
    s = T0 + i * 1000 if start is None else start
    return FeatureWindow(wid or f"w{i}", "acme", s, s + 1000, {"x": float(i)}, label)


def feed(rb, windows):
    released, out_all = [], []
    for x in windows:
        out = rb.add(x)
        released += out.released
        out_all.append(out)
    return released, out_all


def cfg(**kw):
    base = dict(release_delay_ms=5000, late_window_tolerance_ms=60000, max_buffer_size=1000)
    base.update(kw)
    return ReplayConfig(**base)


def test_duplicates_are_dropped_and_counted():
    rb = ReplayBuffer("acme", cfg())
    released, outs = feed(rb, [w(0), w(1), w(1), w(2), w(0)])
    released += rb.flush().released
    assert [x.window_id for x in released] == ["w0", "w1", "w2"]
    assert rb.counters["duplicates"] == 2
    assert sum(len(o.duplicates) for o in outs) == 2


def test_out_of_order_windows_are_released_in_event_time_order():
    order = list(range(200))
    rng = random.Random(3)
    for i in range(0, 198, 2):  # local shuffles within the release delay
        if rng.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    rb = ReplayBuffer("acme", cfg())
    released, _ = feed(rb, [w(i) for i in order])
    assert len(released) < 200  # the last windows are still held within the release delay
    released += rb.flush().released
    assert [x.window_id for x in released] == [f"w{i}" for i in range(200)]
    assert rb.counters["reordered"] == 0 and rb.counters["gaps"] == 0


def test_windows_are_held_until_frontier_passes_release_delay():
    rb = ReplayBuffer("acme", cfg(release_delay_ms=3000))
    assert rb.add(w(0)).released == []          # frontier T0+1000
    assert rb.add(w(2)).released == []          # frontier T0+3000
    out = rb.add(w(3))                          # frontier T0+4000 >= w0 end + 3000
    assert [x.window_id for x in out.released] == ["w0"]
    assert rb.held == 2


def test_late_windows_are_flagged_and_never_released():
    rb = ReplayBuffer("acme", cfg(late_window_tolerance_ms=10_000))
    feed(rb, [w(i) for i in range(30)])
    out = rb.add(w(5, wid="straggler"))  # 25 s behind the frontier
    assert out.released == [] and len(out.late) == 1
    late = out.late[0]
    assert late.delay_ms == (T0 + 30_000) - (T0 + 6000) and late.window["window_id"] == "straggler"
    assert rb.counters["late"] == 1


def test_a_window_behind_released_but_within_tolerance_is_trained_out_of_order():
    rb = ReplayBuffer("acme", cfg(release_delay_ms=1000, late_window_tolerance_ms=60_000))
    released, _ = feed(rb, [w(i) for i in range(10) if i != 3])
    out = rb.add(w(3))
    assert [x.window_id for x in out.released] == ["w3"]
    assert rb.counters["reordered"] == 1 and rb.counters["gaps"] == 1


def test_gaps_are_detected_in_the_released_cadence():
    rb = ReplayBuffer("acme", cfg())
    released, outs = feed(rb, [w(i) for i in (0, 1, 2, 5, 6, 9)])
    out = rb.flush()
    gaps = [g for o in outs for g in o.gaps] + out.gaps
    assert [(g.before_window_id, g.after_window_id, g.missing_ms) for g in gaps] == [
        ("w2", "w5", 2000), ("w6", "w9", 2000)]


def test_overflow_releases_oldest_early_and_keeps_order():
    rb = ReplayBuffer("acme", cfg(max_buffer_size=3, release_delay_ms=10**9))
    released, _ = feed(rb, [w(i) for i in range(10)])
    assert rb.held == 3
    assert [x.window_id for x in released] == [f"w{i}" for i in range(7)]
    assert rb.counters["forced"] == 7


def test_dedup_memory_is_bounded_by_the_late_tolerance():
    rb = ReplayBuffer("acme", cfg(late_window_tolerance_ms=10_000))
    feed(rb, [w(i) for i in range(1000)])
    assert rb.remembered <= 12
    # A copy of a forgotten window is late, so it is still never trained twice.
    out = rb.add(w(3))
    assert out.late and not out.released


def test_counts_add_up_and_state_round_trips():
    rng = random.Random(11)
    stream = []
    for i in range(500):
        stream.append(w(i))
        if rng.random() < 0.1:
            stream.append(w(i))
        if rng.random() < 0.02:
            stream.append(w(max(0, i - 200), wid=f"late{i}"))
    rb = ReplayBuffer("acme", cfg())
    half = len(stream) // 2
    r1, _ = feed(rb, stream[:half])
    rb2 = ReplayBuffer.from_bytes(rb.to_bytes(), cfg())
    assert rb2.to_bytes() == rb.to_bytes()
    r2, _ = feed(rb2, stream[half:])
    r2 += rb2.flush().released
    c = rb2.counters
    assert c["received"] == len(stream)
    assert c["received"] == c["released"] + c["duplicates"] + c["late"] + rb2.held
    ids = [x.window_id for x in r1 + r2]
    assert len(ids) == c["released"] == len(set(ids))  # nothing released twice
    assert {f"w{i}" for i in range(500)} <= set(ids)


def test_a_window_far_in_the_future_is_refused_and_does_not_move_the_frontier():
    rb = ReplayBuffer("acme", cfg(max_future_ms=3_600_000))
    released, outs = feed(rb, [w(0), w(1), w(10_000_000), w(2), w(3)])
    released += rb.flush().released
    assert [x.window_id for x in released] == ["w0", "w1", "w2", "w3"]
    refused = [r for o in outs for r in o.refused]
    assert [(x.window_id, reason.split(":")[:2]) for x, reason in refused] == [
        ("w10000000", ["bad_timestamp", " future"])]
    assert "replay.max_future_ms = 3600000" in refused[0][1]
    assert rb.counters["future"] == 1 and rb.counters["late"] == 0
    assert rb.counters["received"] == 4  # refused windows are dead letters, not received
    # within the limit a jump ahead is accepted (a tenant resuming after a pause)
    ok = ReplayBuffer("acme", cfg(max_future_ms=3_600_000))
    feed(ok, [w(0), w(3000)])
    assert ok.counters["future"] == 0 and ok.frontier == w(3000).window_end
