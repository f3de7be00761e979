import numpy as np
import pytest

from model.device import DeviceError, resolve_device
from model.network import ModelConfig, learner_for
from model.tf_thread import tf_call
from state.records import FeatureWindow, Feedback
from state.trainer import TrainerConfig, TrainerState

T0 = 1_800_000_000_000
NAMES = ("a", "b", "c", "d")


def stream(n, seed=0, label=True):
    rng = np.random.default_rng(seed)
    w = np.array([0.5, -0.3, 0.8, 0.1])
    out = []
    for i in range(n):
        x = rng.normal(size=4)
        y = float(x @ w + 0.2)
        out.append(FeatureWindow(f"w{i}", "acme", T0 + i * 1000, T0 + i * 1000 + 1000,
                                 dict(zip(NAMES, x.tolist())), y if label else None))
    return out


def fast(**kw):
    base = dict(learning_rate=0.05, batch_size=8, snapshot_interval=100)
    base.update(kw)
    return TrainerConfig(**base)


def train_all(ts, windows):
    outs = [ts.on_window(w) for w in windows] + [ts.drain()]
    return [d for o in outs for d in o.deltas], [s for o in outs for s in o.snapshots]


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_loss_falls_on_a_learnable_stream(head):
    ts = TrainerState("acme", ModelConfig(head=head, input_width=64), fast(snapshot_interval=10**6))
    deltas, _ = train_all(ts, stream(1600))
    first = np.mean([d.drift_score for d in deltas[:160]])
    last = np.mean([d.drift_score for d in deltas[-160:]])
    assert last < first / 4, (first, last)
    assert ts.trained == 1600 and ts.counters["steps"] == 200


def test_logistic_head_predicts_probabilities():
    ts = TrainerState("acme", ModelConfig(head="logistic", input_width=32), fast())
    ws = [FeatureWindow(w.window_id, "acme", w.window_start, w.window_end, w.features,
                        float(w.label > 0.2)) for w in stream(400)]
    deltas, _ = train_all(ts, ws)
    assert all(0.0 <= d.shadow_prediction <= 1.0 for d in deltas)
    assert np.mean([d.drift_score for d in deltas[-80:]]) < np.mean([d.drift_score for d in deltas[:80]])


def test_test_then_train_predicts_before_training():
    ts = TrainerState("acme", ModelConfig(input_width=32), fast(batch_size=4))
    deltas, _ = train_all(ts, stream(4))
    # The first batch is predicted by the zero-initialised model.
    assert [d.shadow_prediction for d in deltas] == [0.0] * 4
    assert all(d.model_version == 0 and d.snapshot_id is None for d in deltas)


def test_snapshot_exactly_at_the_interval_even_when_batches_do_not_divide_it():
    ts = TrainerState("acme", ModelConfig(input_width=32), fast(batch_size=32, snapshot_interval=50))
    _, snaps = train_all(ts, stream(260))
    assert [s.manifest["windows_trained"] for s in snaps] == [50, 100, 150, 200, 250]
    assert [s.manifest["version"] for s in snaps] == [1, 2, 3, 4, 5]
    assert snaps[1].manifest["parent_snapshot_id"] == snaps[0].snapshot_id == "acme-v000001"
    assert snaps[0].manifest["window_start"] == T0 and snaps[0].manifest["window_end"] == T0 + 50_000
    assert set(snaps[0].arrays) >= {"w", "b", "slot_z_w", "slot_n_w"}  # FTRL's slots


def test_pause_scores_but_does_not_train_then_resume():
    ts = TrainerState("acme", ModelConfig(input_width=32), fast())
    train_all(ts, stream(80))
    w_before = ts.params["w"].copy()
    ts.pause()
    deltas, snaps = train_all(ts, stream(40, seed=1))
    assert len(deltas) == 40 and not snaps
    assert np.array_equal(ts.params["w"], w_before)
    assert ts.counters["paused_skipped"] == 40 and ts.trained == 80
    ts.resume()
    train_all(ts, stream(16, seed=2))
    assert ts.trained == 96 and not np.array_equal(ts.params["w"], w_before)


def test_state_round_trip_continues_identically():
    data = stream(300)
    a = TrainerState("acme", ModelConfig(input_width=32), fast())
    train_all(a, data[:150])
    a.on_window(data[150])  # leave a partial batch in flight
    b = TrainerState.from_bytes(a.to_bytes())
    assert b.to_bytes() == a.to_bytes()
    da, sa = train_all(a, data[151:])
    db, sb = train_all(b, data[151:])
    assert [d.shadow_prediction for d in da] == [d.shadow_prediction for d in db]
    assert [s.manifest for s in sa] == [s.manifest for s in sb]
    assert np.array_equal(a.params["w"], b.params["w"])


@pytest.mark.parametrize("head", ["linear", "logistic", "mlp"])
def test_steps_per_call_changes_when_tensorflow_is_called_not_what_is_learned(head):
    """Ready batches trained k at a time in one call give the weights, predictions, snapshots
    and step counts of one call per batch, bit for bit, and nothing is trained twice."""
    from model.snapshot import encode

    data = stream(530)
    runs = {}
    for k in (1, 3, 16):
        ts = TrainerState("acme", ModelConfig(head=head, input_width=32),
                          fast(snapshot_interval=100, steps_per_call=k))
        outs = [ts.on_window(w) for w in data]
        if k == 1:  # one call per batch: every delta is out as soon as its batch is full
            assert sum(len(o.deltas) for o in outs) == 524 and not ts.ready
        outs.append(ts.flush())
        deltas = [d for o in outs for d in o.deltas]
        snaps = [encode(s).sha256 for o in outs for s in o.snapshots]
        runs[k] = ([(d.prediction_id, d.shadow_prediction, d.model_version) for d in deltas],
                   snaps, ts.counters["steps"], ts.params["w"].tobytes())
        assert ts.trained == 530 and len(deltas) == 530 and len(snaps) == 5
    assert runs[1] == runs[3] == runs[16]


def test_ready_batches_survive_a_state_round_trip():
    data = stream(100)
    a = TrainerState("acme", ModelConfig(input_width=32), fast(steps_per_call=8))
    for w in data[:45]:
        a.on_window(w)
    assert len(a.ready) == 5 and len(a.batch) == 5 and a.trained == 0
    b = TrainerState.from_bytes(a.to_bytes())
    da, db = train_all(a, data[45:]), train_all(b, data[45:])
    assert [d.shadow_prediction for d in da[0]] == [d.shadow_prediction for d in db[0]]
    assert a.trained == b.trained == 100


def test_delayed_labels_train_once_feedback_arrives_and_missing_ones_stay_pending():
    ts = TrainerState("acme", ModelConfig(input_width=32), fast(batch_size=4))
    unlabeled = stream(10, label=False)
    labels = {w.window_id: w.label for w in stream(10)}
    for w in unlabeled:
        ts.on_window(w)
    assert ts.trained == 0 and ts.pending == 10
    for wid in list(labels)[:8]:
        ts.on_feedback(Feedback(wid, "acme", labels[wid], T0))
    ts.flush()
    assert ts.trained == 8 and ts.pending == 2
    # feedback before its window
    ts.on_feedback(Feedback("early", "acme", 1.0, T0))
    ts.on_window(FeatureWindow("early", "acme", T0, T0 + 1, {"a": 1.0}, None))
    ts.flush()
    assert ts.trained == 9 and ts.pending == 2
    assert ts.counters["windows"] == 11 == ts.trained + ts.pending


def test_waiting_room_is_bounded_and_evictions_are_counted():
    ts = TrainerState("acme", ModelConfig(input_width=32), fast(max_pending_labels=5))
    for w in stream(12, label=False):
        ts.on_window(w)
    assert len(ts.awaiting) == 5 and ts.counters["label_expired"] == 7 and ts.pending == 12


def test_predict_gives_predictions_and_embeddings():
    ts = TrainerState("acme", ModelConfig(head="mlp", input_width=32, hidden_units=16), fast())
    train_all(ts, stream(64))
    pred, emb = ts.predict([{"a": 1.0}, {"b": -1.0}])
    assert pred.shape == (2,) and emb.shape == (2, 16)


def test_device_choice():
    assert tf_call(resolve_device, "cpu") == "/CPU:0"
    import tensorflow as tf
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(DeviceError, match="no GPU"):
            tf_call(resolve_device, "gpu")
        assert tf_call(resolve_device, "auto") == "/CPU:0"
    else:
        assert tf_call(resolve_device, "gpu") == "/GPU:0"
        assert tf_call(resolve_device, "auto") == "/GPU:0"
    with pytest.raises(DeviceError):
        tf_call(resolve_device, "tpu")


def test_one_learner_per_config():
    assert learner_for(ModelConfig(input_width=16)) is learner_for(ModelConfig(input_width=16))
