import threading

import numpy as np
from hypothesis import given, settings, strategies as st

from model.lifecycle.adapter import Adapter
from model.lifecycle.registry import STAGES, TenantView, empty_document, tenant_entry
from model.lifecycle.retention import RetentionRule, apply, plan
from tests.core.governance_helpers import World

ROWS = [{"a": 1.0, "b": -0.5, "c": 0.25}, {"a": -1.0}]


def adapter(world, env=None, **kw):
    return Adapter(world.registry, world.store, world.verifier, "acme", "active", "agent-1",
                   max_retries=2, retry_backoff_ms=1, sleep=lambda s: None,
                   env={} if env is None else env, **kw)


def test_adapter_adopts_serves_and_reports(tmp_path):
    w = World(tmp_path)
    a, b = w.ids()[:2]
    ad = adapter(w)
    assert ad.sync().status == "empty"
    w.walk_to_active("acme", a)
    r = ad.sync()
    assert (r.status, r.snapshot_id) == ("adopted", a)
    pred, emb = ad.predict(ROWS), ad.embed(ROWS)
    assert pred.shape == (2,) and emb.shape == (2, 8) and np.isfinite(pred).all()
    assert ad.sync().status == "unchanged"
    rep = w.registry.tenant("acme")["adoption"]["agent-1"]
    assert rep["snapshot_id"] == a and rep["version"] == 1 and rep["failures"] == 0
    # hot reload on an activation event
    w.walk_to_active("acme", b)
    act = [e for e in w.sink.read() if e["event"] == "ai.upm.snapshot.activated"][-1]
    assert ad.on_activation(act).status == "adopted" and ad.current.snapshot_id == b
    assert not np.array_equal(ad.predict(ROWS), pred)


def test_rollback_makes_the_adapter_serve_the_previous_artifact(tmp_path):
    w = World(tmp_path)
    a, b = w.ids()[:2]
    w.walk_to_active("acme", a)
    w.walk_to_active("acme", b)
    ad = adapter(w)
    ad.sync()
    assert ad.current.snapshot_id == b
    w.gov.on_quarantine({"event": "ai.upm.drift.quarantine", "tenant_id": "acme",
                         "trainer_id": "t", "drift_window_id": "x", "drift_p95": 0.7,
                         "threshold": 0.2, "sample_count": 2000, "recommendation": "rollback",
                         "snapshot_id": b, "quarantined_at": 0})
    assert ad.sync().status == "adopted" and ad.current.snapshot_id == a


def test_kill_switch_holds_the_adapter_where_it_is(tmp_path):
    w = World(tmp_path)
    a, b = w.ids()[:2]
    w.walk_to_active("acme", a)
    env = {}
    ad = adapter(w, env=env)
    ad.sync()
    w.walk_to_active("acme", b)
    env["UPM_KILL_SWITCH"] = "1"
    r = ad.sync()
    assert r.status == "killed" and ad.current.snapshot_id == a
    del env["UPM_KILL_SWITCH"]
    assert ad.sync().status == "adopted" and ad.current.snapshot_id == b


def test_flipped_byte_adapter_refuses_and_keeps_serving(tmp_path):
    w = World(tmp_path)
    a, b = w.ids()[:2]
    w.walk_to_active("acme", a)
    ad = adapter(w)
    ad.sync()
    before = ad.predict(ROWS)
    w.walk_to_active("acme", b)
    path = w.store.path_of(w.registry.artifact("acme", b)["uri"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    r = ad.sync()
    assert r.status == "failed" and "sha256 mismatch" in r.error and r.attempts == 1
    assert ad.current.snapshot_id == a and np.array_equal(ad.predict(ROWS), before)
    rep = w.registry.tenant("acme")["adoption"]["agent-1"]
    assert rep["failures"] == 1 and rep["snapshot_id"] == a and b in rep["last_error"]


def test_missing_file_is_retried_with_backoff_then_reported(tmp_path):
    w = World(tmp_path)
    a = w.ids()[0]
    w.walk_to_active("acme", a)
    w.store.path_of(w.registry.artifact("acme", a)["uri"]).unlink()
    sleeps = []
    ad = Adapter(w.registry, w.store, w.verifier, "acme", "active", "agent-2", max_retries=3,
                 retry_backoff_ms=100, sleep=sleeps.append, env={})
    r = ad.sync()
    assert r.status == "failed" and r.attempts == 4 and sleeps == [0.1, 0.2, 0.4]
    assert ad.current is None


def test_sync_timeout_stops_retrying(tmp_path):
    w = World(tmp_path)
    a = w.ids()[0]
    w.walk_to_active("acme", a)
    w.store.path_of(w.registry.artifact("acme", a)["uri"]).unlink()
    now = [0.0]

    def sleep(s):
        now[0] += s
    ad = Adapter(w.registry, w.store, w.verifier, "acme", "active", "agent-3", max_retries=10,
                 retry_backoff_ms=1000, sync_timeout_ms=2500, sleep=sleep, env={},
                 clock=lambda: now[0])
    r = ad.sync()
    assert r.status == "failed" and "timed out after 2500 ms" in r.error and r.attempts == 3


def test_fleet_sync_in_batches(tmp_path):
    from model.lifecycle.adapter import sync_fleet
    w = World(tmp_path)
    w.walk_to_active("acme", w.ids()[0])
    fleet = [Adapter(w.registry, w.store, w.verifier, "acme", "active", f"agent-{i}", env={})
             for i in range(7)]
    assert [r.status for r in sync_fleet(fleet, batch_size=3)] == ["adopted"] * 7
    assert len(w.registry.tenant("acme")["adoption"]) == 7


def test_predictions_never_see_a_half_loaded_model(tmp_path):
    w = World(tmp_path, n=3)
    ids = w.ids()
    w.walk_to_active("acme", ids[0])
    ad = adapter(w)
    ad.sync()
    expected = {}
    for sid in ids:
        snap = w.snaps["acme"][ids.index(sid)]
        from model.lifecycle.adapter import ServingModel
        expected[sid] = ServingModel.from_snapshot(snap, 0).predict(ROWS)[0]
    synced = threading.Event()
    seen = []  # index in ids of the model each prediction came from (-1: none of them)

    def reader():  # runs until it has seen the last model, after every swap was made
        while True:
            p = ad.predict(ROWS)
            which = next((i for i, sid in enumerate(ids) if np.array_equal(p, expected[sid])), -1)
            if not seen or seen[-1] != which:
                seen.append(which)
            if synced.is_set() and which == len(ids) - 1:
                return
            if which == -1:
                return
    th = threading.Thread(target=reader)
    th.start()
    for sid in ids[1:]:
        w.walk_to_active("acme", sid)
        ad.sync()
    synced.set()
    th.join(timeout=600)
    assert not th.is_alive()
    # every prediction came from one whole model, the reader saw the swaps, in order
    assert -1 not in seen and seen[0] == 0 and seen[-1] == len(ids) - 1
    assert seen == sorted(seen)


actions = st.lists(st.tuples(st.sampled_from(["promote", "rollback", "quarantine"]),
                             st.sampled_from(STAGES), st.integers(0, 11)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(actions, st.integers(0, 4), st.integers(0, 5), st.integers(0, 3))
def test_retention_never_deletes_a_pointed_to_or_known_good_artifact(acts, keep_best, every, days):
    doc = empty_document()
    t = tenant_entry(doc, "acme")
    now = 100 * 86_400_000
    for v in range(12):
        t["artifacts"][f"a{v}"] = {"lineage": {"version": v + 1},
                                   "metrics": {"loss": (v * 7919) % 13 / 10},
                                   "registered_at": now - v * 86_400_000, "uri": f"u{v}",
                                   "sha256": f"h{v}"}
    for kind, stage, v in acts:
        aid = f"a{v}"
        if kind == "promote" and t["stages"][stage] != aid:
            if t["stages"][stage]:
                t["previous"][stage].append(t["stages"][stage])
            t["stages"][stage] = aid
        elif kind == "rollback" and t["previous"][stage]:
            t["artifacts"][t["stages"][stage]]["rolled_back"] = True
            t["stages"][stage] = t["previous"][stage].pop()
        elif kind == "quarantine":
            t["artifacts"][aid]["quarantined"] = True
    doomed = set(plan(TenantView("t", t), now, RetentionRule(keep_best, "loss", every, days)))
    pointed = {a for a in t["stages"].values() if a}
    assert not doomed & pointed
    known_good = set()
    for s in STAGES:
        good = [a for a in t["previous"][s] if not (t["artifacts"][a].get("quarantined")
                                                    or t["artifacts"][a].get("rolled_back"))]
        if good:
            assert good[-1] not in doomed
            known_good.add(good[-1])
    # and nothing else is kept but what the other rules keep, computed here on their own
    arts = t["artifacts"]
    best = sorted(arts, key=lambda a: (arts[a]["metrics"]["loss"], a))[:keep_best]
    milestones = {a for a in arts if every and arts[a]["lineage"]["version"] % every == 0}
    recent = {a for a in arts if now - arts[a]["registered_at"] < days * 86_400_000}
    assert doomed == set(arts) - pointed - known_good - set(best) - milestones - recent


def test_retention_apply_deletes_files_and_entries_but_spares_stages(tmp_path):
    w = World(tmp_path, n=6)
    ids = w.ids()
    w.walk_to_active("acme", ids[1])
    w.walk_to_active("acme", ids[2])
    w.clock.advance(40 * 86400)
    rule = RetentionRule(keep_best=0, milestone_every=0, retention_days=30)
    doomed = plan(w.registry.view("acme"), w.registry.now_ms(), rule)
    assert ids[1] not in doomed and ids[2] not in doomed and ids[0] in doomed
    gone = apply(w.registry, w.store, "acme", rule, "test")
    assert gone == doomed
    t = w.registry.tenant("acme")
    assert set(t["artifacts"]) == {ids[1], ids[2]}
    for a in gone:
        assert not w.store.path_of(t["retired"][a]["uri"]).exists()
    assert all(w.store.path_of(t["artifacts"][a]["uri"]).exists() for a in t["artifacts"])
    assert [h["action"] for h in t["history"]].count("retire") == len(gone)


def _old_rollback_target(t, stage):
    """The rollback of the registry before TenantView (model/governance.py, session 7), kept
    here as the reference: pop bad or current pointers off the stage's history, then the next."""
    history, cur = list(t["previous"][stage]), t["stages"][stage]
    bad = lambda a: a.get("quarantined") or a.get("rolled_back")  # noqa: E731
    while history and (bad(t["artifacts"].get(history[-1], {})) or history[-1] == cur):
        history.pop()
    return (history.pop(), history) if history else (None, None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["promote", "bad"]), st.integers(0, 5)), max_size=25))
def test_roll_back_returns_where_the_old_rule_did(acts):
    doc = empty_document()
    t = tenant_entry(doc, "acme")
    for v in range(6):
        t["artifacts"][f"a{v}"] = {"lineage": {"version": v + 1}, "metrics": {}, "uri": f"u{v}",
                                   "sha256": f"h{v}"}
    view = TenantView("acme", t)
    for kind, v in acts:
        if kind == "promote" and t["stages"]["active"] != f"a{v}":
            view.point("active", f"a{v}", 0)
        elif kind == "bad":
            t["artifacts"][f"a{v}"]["quarantined"] = True
    expected, history_after = _old_rollback_target(t, "active")
    moved = view.roll_back("active", 1)
    if expected is None or t["stages"]["active"] is None:
        assert moved is None
    else:
        assert moved[1] == expected == t["stages"]["active"]
        assert t["previous"]["active"] == history_after
