"""Prequential scores per tenant: exact on known predictions, carried by every snapshot's
manifest (the interval it closes) and the end-of-input stats, identical on the streaming and the
block path, and able to tell a learner that learns from one that does not."""

import json
import math

import numpy as np
import pytest

from model.network import ModelConfig
from pipelines.local_job import run_local
from state.prequential import Prequential
from state.trainer import TrainerConfig, TrainerState
from state.stats import trainer_stats

T0 = 1_800_000_000_000


def test_scores_of_known_predictions():
    s = Prequential()
    s.add([0.9, 0.2, 0.6], [1.0, 0.0, 0.0], "probability")
    got = s.scores("probability")
    assert got["n"] == 3 and got["accuracy"] == pytest.approx(2 / 3)
    assert got["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    assert got["brier"] == pytest.approx((0.01 + 0.04 + 0.36) / 3)
    assert got["mae"] == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    r = Prequential()
    r.add([1.0, 5.0], [2.0, 1.0], "numeric")
    assert r.scores("numeric") == {"n": 2, "mae": 2.5, "rmse": pytest.approx(math.sqrt(8.5))}
    assert Prequential().scores("numeric") == {}
    bad = Prequential()
    bad.add([float("inf")], [1.0], "numeric")
    assert bad.scores("numeric")["mae"] is None  # records are strict JSON


def separable(n, seed=0):
    """A binary stream a linear model learns: y = [x0 + 0.5 x1 > 0]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.normal(size=4)
        out.append(json.dumps({"window_id": f"w{i}", "tenant_id": "acme",
                               "window_start": T0 + i * 1000, "window_end": T0 + (i + 1) * 1000,
                               "features": {f"f{j}": float(v) for j, v in enumerate(x)},
                               "label": float(x[0] + 0.5 * x[1] > 0)}))
    return out


def run(lr=None):
    """The default learner (or one at learning rate `lr`) on `separable(3000)`."""
    from state.config import UpmConfig
    trainer = {"snapshot_interval": 500, **({"learning_rate": lr} if lr else {})}
    cfg = UpmConfig.from_dict({"model": {"head": "logistic"}, "trainer": trainer})
    return run_local(separable(3000), cfg).tenants["acme"]


def test_a_learner_that_learns_scores_better_than_one_that_does_not():
    learns, stuck = run(), run(1e-9)
    acc = lambda t: t.pipeline.trainer.scores()["accuracy"]  # noqa: E731
    loss = lambda t: t.pipeline.trainer.scores()["log_loss"]  # noqa: E731
    # (accuracy only needs the weights' signs: the first tiny steps already get those right,
    # so log loss is what shows that the stuck one learned nothing)
    assert acc(learns) > 0.9 and loss(learns) < 0.35 < 0.65 < loss(stuck), (
        acc(learns), loss(learns), loss(stuck))
    # each snapshot reports the windows of its own interval; a learning model improves
    first, last = learns.snapshots[0].manifest, learns.snapshots[-1].manifest
    assert first["metrics"]["prequential"]["n"] == first["windows_in_snapshot"] == 500
    assert last["metrics"]["prequential"]["accuracy"] > first["metrics"]["prequential"]["accuracy"]
    assert last["metrics"]["prequential_total"]["n"] == last["windows_trained"]
    stats = json.loads(trainer_stats(learns.pipeline.trainer))
    assert stats["scores"]["accuracy"] == acc(learns) and stats["scores"]["n"] == 3000


def test_scores_survive_a_restore_from_parts():
    model = ModelConfig(head="logistic", input_width=32)
    ts = TrainerState("acme", model, TrainerConfig(batch_size=4, snapshot_interval=100))
    from state.parse import parse_message
    recs = [parse_message(line).record for line in separable(150)]
    for w in recs[:70]:
        ts.on_window(w)
    back = TrainerState.from_parts(ts.parts())
    for t in (ts, back):
        for w in recs[70:]:
            t.on_window(w)
        t.flush()
    assert back.scores() == ts.scores() and ts.scores()["n"] == 150
    assert back.score_interval == ts.score_interval
