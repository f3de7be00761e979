"""Tenants trained together (state/train_group.py, model/network.py `Learner.train`) get exactly
what each gets trained alone: the same weights, slots, losses, shadow predictions and snapshots,
whichever tenants share a TensorFlow call and wherever a tenant sits in it."""

import hashlib

import numpy as np
import pytest

from model.network import ModelConfig, TrainJob, init_params, init_slots, learner_for
from model.snapshot import encode
from pipelines.local_job import run_local
from runners.embedded import demo_config
from state import train_group
from state.parse import parse_message
from state.scenario import ScenarioSpec, generate
from state.tenant import TenantPipeline
from state.train_group import TrainGroup
from state.trainer import TrainerConfig, TrainerState
from tests.core.test_trainer import stream

WIDTH = 64


def job(cfg: ModelConfig, rng, sizes) -> TrainJob:
    params = {k: (v + rng.normal(size=v.shape) * 0.1).astype(np.float32)
              for k, v in init_params(cfg).items()}
    rows = int(sum(sizes))
    x = (rng.normal(size=(rows, WIDTH)) * (rng.random((rows, WIDTH)) < 0.2)).astype(np.float32)
    y = (rng.random(rows) < 0.5).astype(np.float32)
    return TrainJob(params, init_slots(cfg, params, 0.3), int(rng.integers(0, 50)),
                    float(rng.choice([0.05, 0.3])), x, y, list(sizes))


def same(a, b) -> bool:
    return (all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
            and all(np.array_equal(a.slots[k], b.slots[k]) for k in a.slots)
            and np.array_equal(a.losses, b.losses)
            and np.array_equal(a.predictions, b.predictions))


@pytest.mark.parametrize("jit", ["off", "on"])  # the loop op by op, and compiled by XLA
@pytest.mark.parametrize("head,optimizer", [("linear", "ftrl"), ("logistic", "adam"),
                                            ("mlp", "adagrad"), ("mlp_logistic", "ftrl")])
def test_a_job_trains_the_same_whichever_jobs_share_its_call(head, optimizer, jit):
    cfg = ModelConfig(input_width=WIDTH, head=head, optimizer=optimizer, hidden_units=8,
                      jit=jit)
    learner = learner_for(cfg)
    rng = np.random.default_rng(3)
    target = job(cfg, rng, [4, 4, 4, 3, 1])
    alone = learner.train([target])[0]
    for companions in (1, 2, 7):
        others = [job(cfg, rng, rng.integers(1, 6, size=rng.integers(1, 5)))
                  for _ in range(companions)]
        at = int(rng.integers(0, companions + 1))
        results = learner.train(others[:at] + [target] + others[at:])
        assert same(results[at], alone), (companions, at)
        assert same(results[0 if at else 1], learner.train([others[0]])[0])


def per_tenant(run, tenant):
    t = run.tenants[tenant]
    return ({k: v.tolist() for k, v in t.trainer.params.items()},
            [encode(s, "none").sha256 for s in t.snapshots],
            [(d.prediction_id, d.shadow_prediction) for d in run.deltas if d.tenant_id == tenant],
            t.trainer.scores(), run.counts(tenant))


@pytest.mark.parametrize("steps_per_call,jit", [(64, "off"), (2, "off"), (64, "on")])
def test_tenants_trained_together_equal_each_trained_alone(steps_per_call, jit):
    lines, expected = generate(ScenarioSpec(tenants=5, windows_per_tenant=400, seed=11))
    cfg = demo_config().with_overrides([f"trainer.steps_per_call={steps_per_call}",
                                        f"model.jit={jit}"])
    together = run_local(lines, cfg, keep_deltas=True)
    assert together.group.trained_ahead > len(expected.tenants)  # it did train tenants ahead
    for tenant in expected.tenants:
        mine = [ln for ln in lines if f'"{tenant}"' in ln]
        alone = run_local(mine, cfg, keep_deltas=True)
        assert alone.group.trained_ahead == 0
        assert per_tenant(together, tenant) == per_tenant(alone, tenant), tenant


def test_a_result_trained_ahead_is_dropped_when_the_trainer_moved():
    """A trainer whose weights changed after its batches were trained ahead (a warm start from a
    snapshot) trains them again at its turn; one that did not takes the result as it is, even
    parked in between."""
    cfg, tcfg = ModelConfig(input_width=WIDTH), TrainerConfig(batch_size=4, steps_per_call=64)
    group = TrainGroup()
    a, b, ref = (TrainerState(n, cfg, tcfg) for n in ("a", "b", "b"))
    a.group = b.group = group
    source = TrainerState("src", cfg, tcfg)
    for w in stream(40, seed=5):
        source.on_window(w)
    source.flush()
    snap = source.snapshot_now()
    for ts, seed in ((a, 1), (b, 2), (ref, 2)):
        for w in stream(12, seed=seed):
            ts.on_window(w)
    b.park()
    a.drain()  # a's turn: b's three ready batches are trained ahead
    assert group.trained_ahead == 1 and b._parked is not None
    assert [d.shadow_prediction for d in b.drain().deltas] == \
        [d.shadow_prediction for d in ref.drain().deltas]
    assert all(np.array_equal(b.params[k], ref.params[k]) for k in ref.params)
    for ts, seed in ((a, 3), (b, 4)):
        for w in stream(8, seed=seed):
            ts.on_window(w)
    a.drain()
    assert group.trained_ahead == 2
    b.load_snapshot(snap)
    again = TrainerState("b", cfg, tcfg)
    again.load_snapshot(snap)
    for w in stream(8, seed=4):
        again.on_window(w)
    assert [d.shadow_prediction for d in b.drain().deltas] == \
        [d.shadow_prediction for d in again.drain().deltas]


def test_tenants_ending_in_another_order_than_they_released_share_calls_and_end_as_alone(
        monkeypatch):
    """At the end of a bounded input Flink releases every tenant, then fires their end turns in
    its timer queue's order, not the order they released in (transforms/flink/functions.py
    RELEASE_AT_END). The group still trains their last batches together; the results wait for
    their turns, packed past PLAIN_HELD_BYTES (state/packed.py), and each tenant ends exactly
    as it does alone."""
    monkeypatch.setattr(train_group, "PLAIN_HELD_BYTES", 300_000)  # a few plain, most packed
    lines, expected = generate(ScenarioSpec(tenants=40, windows_per_tenant=6, seed=5))
    cfg = demo_config()
    group = TrainGroup()
    pipes: dict[str, TenantPipeline] = {}
    outs: dict[str, list] = {}
    for line in lines:
        parsed = parse_message(line)
        if parsed.ok:
            tid = parsed.record.tenant_id
            if tid not in pipes:
                pipes[tid] = TenantPipeline.new(tid, cfg).train_in(group)
            outs.setdefault(tid, []).append(pipes[tid].on_records((parsed.record,)))
    for tid in sorted(pipes):
        outs[tid].append(pipes[tid].release())
    calls = group.calls
    for tid in sorted(pipes, key=lambda t: hashlib.sha256(t.encode()).digest()):
        outs[tid].append(pipes[tid].end())
    assert group.calls - calls <= 3 < len(pipes)  # not a call per tenant
    assert group._packed_size > 0  # (some results waited packed)
    assert group._held_bytes() == 0 and not group._holding  # every result was taken
    for tid, p in pipes.items():
        alone = run_local([ln for ln in lines if f'"{tid}"' in ln], cfg, keep_deltas=True)
        assert alone.group.trained_ahead == 0
        mine = [(d.prediction_id, d.shadow_prediction) for o in outs[tid] for d in o.deltas]
        assert mine == [(d.prediction_id, d.shadow_prediction) for d in alone.deltas], tid
        kept = alone.tenants[tid].pipeline.trainer
        for mine, theirs in ((p.trainer.params, kept.params), (p.trainer.slots, kept.slots),
                             (p.trainer.norm, kept.norm)):
            assert mine.keys() == theirs.keys()
            assert all(np.array_equal(mine[k], theirs[k]) for k in theirs), tid
        assert p.trainer.scores() == kept.scores() and p.trainer.trained == kept.trained > 0
