"""Champion/challenger: the trainer scores the active snapshot and the newest candidate on the
same windows (state/challenge.py), the registry gives the comparison to the candidate, and the
policy's `champion` check refuses a candidate that got worse and promotes one that did not."""

import dataclasses

import numpy as np
import pytest

from model import standardize
from model.lifecycle.governance import PromotionRefused
from model.hashing import FeatureHasher
from model.network import ModelConfig
from model.lifecycle.policy import DEFAULT_POLICY_TOML
from state.prequential import Prequential
from state.records import FeatureWindow
from state.trainer import TrainerConfig, TrainerState
from tests.core.governance_helpers import World, publish
from transforms.publish import refresh_champion

T0 = 1_800_000_000_000
MODEL = ModelConfig(head="logistic", input_width=64)
CONFIG = TrainerConfig(snapshot_interval=200)


def windows(n, start=0, flip=False, seed=0):
    rng = np.random.default_rng(seed + start)
    out = []
    for i in range(start, start + n):
        x = rng.normal(size=3)
        y = float((x[0] - 0.5 * x[1] > 0) != flip)
        out.append(FeatureWindow(f"w{i}", "acme", T0 + i * 1000, T0 + (i + 1) * 1000,
                                 {"a": x[0], "b": x[1], "c": x[2]}, y))
    return out


def feed(ts, ws):
    snaps = []
    for w in ws:
        snaps += ts.on_window(w).snapshots
    return snaps


def test_both_models_are_scored_on_the_same_windows():
    ts = TrainerState("acme", MODEL, CONFIG)
    early = feed(ts, windows(200))[0]          # v1, after 200 windows
    v3 = feed(ts, windows(400, start=200))[-1]  # v3
    ts.set_champion(early)
    assert ts.candidate.snapshot_id == v3.snapshot_id  # nothing trained since the cut
    ws = windows(200, start=600)
    (v4,) = feed(ts, ws)
    ch = v4.manifest["metrics"]["challenge"]
    assert (ch["candidate_snapshot_id"], ch["champion_snapshot_id"]) == ("acme-v000003",
                                                                          "acme-v000001")
    # exactly the scores of each frozen snapshot predicting those windows
    x = FeatureHasher(64).transform([w.features for w in ws])
    y = np.array([w.label for w in ws], np.float32)
    for key, snap in (("candidate", v3), ("champion", early)):
        pred, _ = standardize.predict(MODEL, {k: snap.arrays[k] for k in MODEL.param_names},
                                      standardize.stats_of(snap.arrays, 64), x)
        want = Prequential()
        want.add(pred, y, "probability")
        assert ch[key] == want.scores("probability"), key
    assert ch["candidate"]["n"] == 200
    assert ch["candidate"]["log_loss"] < ch["champion"]["log_loss"]  # 600 windows vs 200
    # and the next interval compares v4 with the same champion
    (v5,) = feed(ts, windows(200, start=800))
    assert v5.manifest["metrics"]["challenge"]["candidate_snapshot_id"] == "acme-v000004"
    ts.set_champion(None)
    (v6,) = feed(ts, windows(200, start=1000))
    assert "challenge" not in v6.manifest["metrics"] and ts.candidate is None


def test_a_champion_of_another_model_is_ignored():
    other = TrainerState("acme", dataclasses.replace(MODEL, input_width=32), CONFIG)
    (snap,) = feed(other, windows(200))
    ts = TrainerState("acme", MODEL, CONFIG)
    ts.set_champion(snap)
    assert ts.champion is None


@pytest.mark.parametrize("how", ["parts", "bytes"])
def test_the_comparison_survives_a_restore_mid_interval(how):
    def run(restore_at):
        ts = TrainerState("acme", MODEL, CONFIG)
        early = feed(ts, windows(200))[0]
        feed(ts, windows(200, start=200))
        ts.set_champion(early)
        ws = windows(400, start=400)
        snaps = feed(ts, ws[:restore_at])
        if restore_at:
            ts = (TrainerState.from_parts(ts.parts()) if how == "parts"
                  else TrainerState.from_bytes(ts.to_bytes()))
            assert ts.champion.snapshot_id == "acme-v000001"
        return snaps + feed(ts, ws[restore_at:])

    whole, restored = run(0), run(123)
    assert [s.manifest for s in restored] == [s.manifest for s in whole]
    assert "challenge" in whole[-1].manifest["metrics"]


def test_the_block_path_records_the_same_comparison():
    ws = windows(1000)
    x = FeatureHasher(64).transform([w.features for w in ws])
    y = np.array([w.label for w in ws], np.float32)
    s = np.array([w.window_start for w in ws])
    e = np.array([w.window_end for w in ws])
    stream = TrainerState("acme", MODEL, CONFIG)
    first = feed(stream, ws[:400])
    stream.set_champion(first[0])
    rest = feed(stream, ws[400:])
    block = TrainerState("acme", MODEL, CONFIG)
    b_first = block.train_block(x[:400], y[:400], s[:400], e[:400]).snapshots
    block.set_champion(b_first[0])
    b_rest = block.train_block(x[400:], y[400:], s[400:], e[400:]).snapshots
    assert [m.manifest for m in b_first + b_rest] == [m.manifest for m in first + rest]
    assert rest[-1].manifest["metrics"]["challenge"]["champion"]["n"] == 200


def to_canary_ready(world, sid):
    """Through staging and shadow, drift measured, the shadow soak over: only `champion` (and
    what it needs) is left to decide canary."""
    world.gov.promote("acme", "staging", sid, "ops", "new")
    world.gov.promote("acme", "shadow", sid, "ops", "ok")
    world.registry.record_drift("acme", sid, 0.05, 5000)
    world.clock.advance(3601)


def test_the_champion_check_refuses_a_candidate_that_got_worse(tmp_path):
    """Through the store: the active snapshot is read from the registry by the engine's
    refresh (transforms/publish.py), comparisons go to the registry with each snapshot, and
    promotion to canary follows them."""
    # (a comparison covers one snapshot interval: 200 windows here, 1000 by default)
    world = World(tmp_path, tenants=(), n=0,
                  policy_toml=DEFAULT_POLICY_TOML.replace("min_samples = 500", "min_samples = 200"))
    ts = TrainerState("acme", MODEL, CONFIG)
    ids = []

    def train(ws):
        for snap in feed(ts, ws):
            publish(world.store, world.registry, world.signer, snap)
            ids.append(snap.snapshot_id)
            refresh_champion(str(tmp_path), ts)  # what the engines do after a cut

    train(windows(600))
    world.walk_to_active("acme", ids[-1])  # v3 active
    train(windows(200, start=600))         # v4: compared with v3 on the windows of v5
    train(windows(200, start=800))
    ch = world.registry.artifact("acme", "acme-v000004")["metrics"]["challenge"]
    assert ch["champion_snapshot_id"] == "acme-v000003" and ch["candidate"]["n"] == 200
    g = world.gov
    to_canary_ready(world, "acme-v000004")
    g.promote("acme", "canary", "acme-v000004", "ops", "better than active", role="operator")

    # the labels flip for 400 windows: v7 learned the wrong concept; back to the right one,
    # it is scored against v3 on the same windows and loses
    train(windows(400, start=1000, flip=True))
    train(windows(400, start=1400))
    bad = "acme-v000007"
    ch = world.registry.artifact("acme", bad)["metrics"]["challenge"]
    assert ch["candidate"]["log_loss"] > ch["champion"]["log_loss"] * 1.02, ch
    to_canary_ready(world, bad)
    with pytest.raises(PromotionRefused) as e:
        g.promote("acme", "canary", bad, "ops", "r", role="operator")
    (fail,) = [f for f in e.value.failures if f.rule == "champion"]
    assert "log_loss" in fail.reason and "acme-v000003" in fail.reason and "200" in fail.reason
    assert world.registry.pointer("acme", "canary") == "acme-v000004"


def test_no_comparison_with_the_current_active_is_refused(tmp_path):
    world = World(tmp_path, n=3)
    a, b, c = world.ids()
    world.walk_to_active("acme", a)
    world.compared("acme", b, against=c, mae=0.1, active_mae=0.2)  # against another snapshot
    g = world.gov
    to_canary_ready(world, b)
    with pytest.raises(PromotionRefused) as e:
        g.promote("acme", "canary", b, "ops", "r", role="operator")
    assert any(f.rule == "champion" and f"compared with {c}" in f.reason
               for f in e.value.failures)
    world.compared("acme", b, against=a, mae=0.1, active_mae=0.1, n=499)
    with pytest.raises(PromotionRefused, match="499 windows < 500"):
        g.promote("acme", "canary", b, "ops", "r", role="operator")
    world.compared("acme", b, against=a, mae=0.102, active_mae=0.1)  # within 2%
    g.promote("acme", "canary", b, "ops", "r", role="operator")
