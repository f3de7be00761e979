"""model.head = "auto" (the default): each tenant's head is chosen from its first labelled
micro-batch (a classifier for labels all 0 or 1, JSON booleans included; else a regressor),
recorded wherever a snapshot or a tenant is reported, kept across warm starts, and a label the
chosen classifier cannot learn later is a dead letter with its reason. The stream and the
backfill choose alike."""

import json

import numpy as np
import pyarrow as pa
import pytest

from model.network import ModelConfig
from pipelines.local_job import run_local
from state import backfill, window_table
from state.config import UpmConfig
from state.parse import parse_message
from state.stats import trainer_stats
from state.trainer import TrainerConfig, TrainerState

T0 = 1_800_000_000_000
CONFIG = UpmConfig.from_dict({"trainer": {"snapshot_interval": 40, "batch_size": 4},
                              "model": {"input_width": 64}})


def message(tenant, i, label, **extra):
    d = {"tenant_id": tenant, "window_id": f"{tenant}-{i:05d}",
         "window_start": T0 + i * 1000, "window_end": T0 + (i + 1) * 1000,
         "features": {"a": float(np.sin(i)), "b": float(np.cos(i * 0.7))}, **extra}
    if label is not None:
        d["label"] = label
    return json.dumps(d)


def stream(tenant, labels):
    return [message(tenant, i, v) for i, v in enumerate(labels)]


def heads(run):
    return {t: r.trainer.model.head for t, r in run.tenants.items()}


def test_labels_0_and_1_booleans_and_numbers_choose_the_head_per_tenant():
    rng = np.random.default_rng(0)
    lines = (stream("floats", [float(v) for v in rng.integers(0, 2, 120)])
             + stream("bools", [bool(v) for v in rng.integers(0, 2, 120)])
             + stream("ints", [int(v) for v in rng.integers(0, 2, 120)])
             + stream("numbers", rng.normal(10, 3, 120).round(3).tolist())
             # 0/1 except one 2.0 in the first micro-batch: a regressor, which takes anything
             + stream("counts", [0.0, 1.0, 2.0] + [float(v) for v in rng.integers(0, 2, 117)]))
    run = run_local(lines, CONFIG)
    assert heads(run) == {"floats": "logistic", "bools": "logistic", "ints": "logistic",
                          "numbers": "linear", "counts": "linear"}
    for t, r in run.tenants.items():
        assert r.trainer.trained == 120 and not run.dead_letters, t
        manifests = [s.manifest["model"] for s in r.snapshots]
        assert manifests and all(m["head"] == heads(run)[t] and m["auto_head"] for m in manifests)
        assert json.loads(trainer_stats(r.trainer))["head"] == heads(run)[t]
    assert run.tenants["bools"].trainer.scores()["accuracy"] is not None  # scored as classes
    assert "mae" in run.tenants["numbers"].trainer.scores()


def test_a_label_the_chosen_classifier_cannot_take_is_a_dead_letter_with_its_reason():
    labels = [0.0, 1.0] * 30
    labels[17], labels[41] = 7.5, -1.0
    lines = stream("acme", labels)
    # and as Feedback: a window without its label, then a Feedback that brings 0.5
    lines.append(message("acme", 60, None))
    lines.append(json.dumps({"tenant_id": "acme", "window_id": "acme-00060", "label": 0.5,
                             "observed_at": T0 + 62_000}))
    run = run_local(lines, CONFIG)
    t = run.tenants["acme"]
    assert t.trainer.model.head == "logistic"
    assert t.trainer.counters["label_refused"] == 3 and t.trainer.trained == 58
    assert len(run.dead_letters) == 3
    assert all(r.startswith("bad_label: label ") and "model.head auto chose logistic" in r
               for r in run.dead_letters), run.dead_letters
    assert "7.5" in run.dead_letters[0] and "-1.0" in run.dead_letters[1]
    c = run.counts("acme")
    assert c["windows_in"] == 61 and c["dead_letters"] == 3
    assert c["windows_in"] == c["trained"] + c["duplicates"] + c["late"] + c["dead_letters"] \
        + c["pending"]


def test_an_explicit_head_wins_and_takes_any_label():
    cfg = UpmConfig.from_dict({"model": {"head": "logistic"}}, CONFIG)
    labels = [0.0, 1.0] * 20
    labels[25] = 0.5  # a soft label: an explicit logistic head takes it, as before auto existed
    run = run_local(stream("acme", labels), cfg)
    t = run.tenants["acme"].trainer
    assert t.model.head == "logistic" and not t.model.auto_head
    assert t.trained == 40 and not run.dead_letters


def test_the_head_is_kept_across_a_warm_start_and_an_engine_restore():
    ts = TrainerState("acme", ModelConfig(input_width=64), TrainerConfig(snapshot_interval=8))
    ws = [parse_message(m).record for m in stream("acme", [1.0, 0.0] * 8)]
    snaps = [s for w in ws for s in ts.on_window(w).snapshots]
    assert ts.model.head == "logistic" and snaps
    # an engine's parts carry it
    restored = TrainerState.from_parts(ts.parts())
    assert restored.model == ts.model
    # a fresh auto trainer warm-started from the snapshot keeps the chosen head, so numeric
    # labels later are refused rather than turning the tenant into a regressor
    fresh = TrainerState("acme", ModelConfig(input_width=64), TrainerConfig(snapshot_interval=8))
    assert fresh.model.resolved_as(ModelConfig.from_dict(snaps[-1].manifest["model"]))
    fresh.load_snapshot(snaps[-1])
    assert fresh.model.head == "logistic" and fresh.model.auto_head
    w = parse_message(message("acme", 99, 3.25)).record
    out = fresh.on_window(w)
    assert [reason[:10] for _, reason in out.refused] == ["bad_label:"]
    # a snapshot of another explicit head is not this config resolved
    other = ModelConfig(input_width=64, head="mlp")
    assert not ModelConfig(input_width=64).resolved_as(other)


def _table(lines):
    return pa.Table.from_batches([window_table.from_json_lines(lines)])


@pytest.mark.parametrize("labels", [
    [0.0, 1.0, 1.0, 0.0] * 25 + [3.0, 1.0, 0.5],  # classifier, then two refused
    [0.0, 1.0, 2.0, 0.0] * 25,                      # a regressor from the first batch
    [1.0, 0.0],                                     # fewer labels than one batch
])
def test_the_backfill_chooses_and_refuses_as_the_stream_does(labels):
    lines = stream("acme", labels)
    run = run_local(lines, CONFIG)
    c = CONFIG.for_tenant("acme")
    prep = backfill.prepare("acme", _table(lines), None, None)
    trainer = TrainerState("acme", c.model, c.trainer)
    refused = backfill.choose_head(prep, trainer)
    snaps = list(backfill.train(prep, trainer))
    stream_trainer = run.tenants["acme"].trainer
    assert trainer.model == stream_trainer.model
    assert refused.column("reason").to_pylist() == run.dead_letters
    assert prep.counters["label_refused"] == stream_trainer.counters["label_refused"]
    assert prep.counters["trained"] == stream_trainer.trained
    models = {json.dumps(s.manifest["model"]) for s in snaps if hasattr(s, "arrays")}
    assert models == {json.dumps(trainer.model.to_dict())}
