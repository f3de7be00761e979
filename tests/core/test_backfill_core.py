"""The engine-free parts of the backfill: columnar hashing, block training, the window table,
and one tenant's preparation (order, duplicates, feedback, range, gaps)."""

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.hashing import FeatureHasher
from model.network import ModelConfig
from state import backfill, window_table
from state.parse import parse_message
from state.records import FeatureWindow, arrow_schema, to_arrow_row
from state.trainer import TrainerConfig, TrainerState

T0 = 1_800_000_000_000


def windows(n, tenant="acme", seed=0, classes=False):
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(10)]
    out = []
    for i in range(n):
        feats = {k: float(rng.normal()) for k in rng.choice(names, 5, replace=False)}
        y = float(rng.normal())
        out.append(FeatureWindow(f"w{i:05d}", tenant, T0 + i * 1000, T0 + (i + 1) * 1000, feats,
                                 float(y > 0) if classes else y))
    return out


def columns(ws):
    vocab, rows, codes, values = {}, [], [], []
    for r, w in enumerate(ws):
        for k, v in w.features.items():
            rows.append(r)
            codes.append(vocab.setdefault(k, len(vocab)))
            values.append(v)
    return np.array(rows, np.int64), np.array(codes, np.int64), list(vocab), np.array(values)


def test_columnar_hashing_equals_row_hashing_bit_for_bit():
    ws = windows(300)
    h = FeatureHasher(16)  # narrow: many collisions, so summation order matters
    rows, codes, vocab, values = columns(ws)
    assert np.array_equal(h.transform_coded(len(ws), rows, codes, vocab, values),
                          h.transform([w.features for w in ws]))


@pytest.mark.parametrize("head", ["linear", "mlp", "logistic", "mlp_logistic"])
def test_train_block_equals_training_window_by_window(head):
    ws = windows(1234, classes=head in ("logistic", "mlp_logistic"))
    model = ModelConfig(head=head, input_width=64, hidden_units=8)
    config = TrainerConfig(snapshot_interval=300, batch_size=8, learning_rate=0.05)
    one_by_one = TrainerState("acme", model, config)
    snaps = []
    for w in ws:
        snaps += one_by_one.on_window(w).snapshots
    snaps += one_by_one.flush().snapshots

    block = TrainerState("acme", model, config)
    x = FeatureHasher(64).transform([w.features for w in ws])
    y = np.array([w.label for w in ws], np.float32)
    start = np.array([w.window_start for w in ws])
    end = np.array([w.window_end for w in ws])
    first = block.train_block(x[:701], y[:701], start[:701], end[:701], final=False)
    assert first.consumed == 696  # 600 to v2, then 12 batches of 8; a part batch of 5 waits
    c = first.consumed
    second = block.train_block(x[c:], y[c:], start[c:], end[c:], final=True)
    assert second.consumed == len(ws) - c
    block_snaps = first.snapshots + second.snapshots
    assert [s.manifest for s in block_snaps] == [s.manifest for s in snaps]
    for a, b in zip(snaps, block_snaps):
        for k in a.arrays:
            assert np.array_equal(a.arrays[k], b.arrays[k]), k
    assert block.counters == one_by_one.counters and block.step == one_by_one.step
    # predictions are the shadow predictions the stream emits, tagged by the snapshot they
    # descend from
    assert [seg[2] for seg in first.segments + second.segments][:2] == [None, "acme-v000001"]
    tail = block.snapshot_now()
    assert tail.manifest["version"] == 5 and tail.manifest["windows_in_snapshot"] == 1234 - 1200
    assert block.snapshot_now() is None


def parquet_batch(rows):
    schema = arrow_schema(FeatureWindow)
    return pa.Table.from_pylist(rows, schema=schema).to_batches()[0]


def test_parquet_rows_are_checked_like_messages():
    good = to_arrow_row(windows(1)[0])
    rows = [good,
            {**good, "window_id": None},
            {**good, "tenant_id": "no/slash"},
            {**good, "window_start": good["window_end"] + 1},
            {**good, "features": [("a", float("inf"))]},
            {**good, "label": float("nan")},
            {**good, "tenant_id": None, "label": None}]
    table = window_table.from_parquet(parquet_batch(rows))
    assert table.schema == window_table.SCHEMA
    out = table.to_pylist()
    assert [r["error"] and r["error"].split(":")[0] for r in out] == [
        None, "missing_field", "unsafe_tenant_id", "bad_timestamp", "not_finite", "not_finite",
        None]
    assert out[0]["feature_names"] == list(windows(1)[0].features)
    assert out[6]["tenant_id"] == "default" and out[6]["label"] is None
    assert json.loads(out[2]["raw"])["tenant_id"] == "no/slash"
    # a slice (as readers hand out) converts the same
    assert window_table.from_parquet(parquet_batch(rows).slice(5, 2)).to_pylist() == out[5:]


def test_a_parquet_file_without_the_window_columns_is_a_schema_error():
    with pytest.raises(window_table.SchemaError, match="window_end"):
        window_table.check_parquet_schema(pa.schema([("window_id", pa.string())]))


def test_tf_example_rows_are_checked_like_messages():
    def lst(values, typ):
        return pa.array(values, pa.large_list(typ))
    n = 4
    batch = pa.RecordBatch.from_pydict({
        "window_id": lst([[b"a"], [b"b", b"c"], [b"d"], [b"e"]], pa.large_binary()),
        "tenant_id": lst([[b"acme"], [b"acme"], None, [b"acme"]], pa.large_binary()),
        "window_start": lst([[T0], [T0], [T0], [T0]], pa.int64()),
        "window_end": lst([[T0 + 1], [T0 + 1], [T0 + 1], None], pa.int64()),
        "label": lst([[0.5], None, None, [1.0]], pa.float32()),
        "feature_names": lst([[b"x", b"y"], [b"x"], [b"x"], [b"x"]], pa.large_binary()),
        "feature_values": lst([[1.0, 2.0], [1.0], [1.0, 2.0], [1.0]], pa.float32()),
    })
    out = window_table.from_tf_examples(batch).to_pylist()
    assert len(out) == n
    assert out[0]["error"] is None and out[0]["feature_values"] == [1.0, 2.0]
    assert out[0]["window_id"] == "a" and out[0]["label"] == 0.5
    assert out[1]["error"].startswith("wrong_type: window_id")
    assert out[2]["error"].startswith("wrong_type: feature_names and feature_values")
    assert out[3]["error"] == "missing_field: window_end"


def test_a_bad_row_gets_the_reason_its_message_gets():
    """One text per rule (state/reasons.py): the columnar checks and the parser agree, word for
    word, on the rows both can express."""
    good = to_arrow_row(windows(1)[0])
    bad = [{**good, "window_id": None}, {**good, "window_id": ""}, {**good, "window_id": "w" * 300},
           {**good, "tenant_id": "no/slash"}, {**good, "window_start": good["window_end"] + 1},
           {**good, "window_start": 1_700_000_000}, {**good, "window_end": 5_000_000_000_000},
           {**good, "features": [(f"f{i}", 1.0) for i in range(5)]},
           {**good, "label": float("inf")}]
    table = window_table.from_parquet(parquet_batch(bad), max_features=4).to_pylist()
    for row, got in zip(bad, table):
        message = {k: v for k, v in row.items() if v is not None or k == "tenant_id"}
        message["features"] = dict(row["features"])
        text = json.dumps(message).replace("Infinity", "1e309")  # a number JSON reads as inf
        assert got["error"] == parse_message(text, 4).reason, (row, got["error"])


def table_of(ws, feedback=()):
    lines = [json.dumps(w.to_dict()) for w in ws] + [json.dumps(f) for f in feedback]
    return pa.Table.from_batches([window_table.from_json_lines(lines)])


def test_prepare_orders_dedupes_joins_feedback_and_accounts():
    ws = windows(20)
    unlabeled = [FeatureWindow(w.window_id, w.tenant_id, w.window_start, w.window_end,
                               w.features, None) for w in ws[10:13]]
    shuffled = [ws[i] for i in (3, 1, 2, 0, 4, 5, 6, 7, 8, 9)] + unlabeled + ws[13:] + [ws[5]]
    gap_after = [w for w in shuffled if w.window_id != "w00015"]  # a missing window: a gap
    feedback = [{"window_id": "w00011", "tenant_id": "acme", "label": 2.0,
                 "observed_at": T0 + 60_000},
                {"window_id": "w00011", "tenant_id": "acme", "label": 9.0,
                 "observed_at": T0 + 90_000}]
    prep = backfill.prepare("acme", table_of(gap_after, feedback),
                            start_ms=T0 + 2000, end_ms=T0 + 19_000)
    c = prep.counters
    assert c["windows"] == 20 and c["feedback"] == 2
    assert c["out_of_range"] == 3  # w0 (ends at T0+1s), w18, w19
    assert c["duplicates"] == 1 and [d.window_id for d in prep.duplicates] == ["w00005"]
    assert c["unlabeled"] == 2  # w10 and w12; w11 got its first feedback's label
    assert c["windows"] == c["out_of_range"] + c["duplicates"] + c["unlabeled"] + len(prep.rows)
    ids = prep.rows.column("window_id").to_pylist()
    assert ids == sorted(ids) and "w00011" in ids
    assert prep.rows.column("label").to_pylist()[ids.index("w00011")] == 2.0
    assert [(g.before_window_id, g.after_window_id) for g in prep.gaps] == [("w00014", "w00016")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.booleans(), min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(0, 14), st.integers(-5, 30), st.floats(-3, 3)),
                max_size=20))
def test_the_feedback_join_is_the_streaming_trainers_rule(labeled, feedback):
    """One rule in two forms: a window keeps its own label, else takes its first Feedback's
    (by event time); the trainer does it as events arrive (bounded), the backfill as a sorted
    join. In event-time order and within the trainer's bounds, both give the same labels."""
    ws = [w if keep else w.with_label(None) for w, keep in zip(windows(len(labeled)), labeled)]
    fbs = [{"window_id": f"w{i:05d}", "tenant_id": "acme", "label": label,
            "observed_at": T0 + t * 1000 + 500} for i, t, label in feedback]
    joined = backfill._join_feedback(table_of(ws).filter(pa.array([True] * len(ws))),
                                     table_of([], fbs))
    batch = dict(zip(joined.column("window_id").to_pylist(), joined.column("label").to_pylist()))
    # an explicit head: the rule under test is the join, not what `auto` refuses
    ts = TrainerState("acme", ModelConfig(input_width=16, head="linear"),
                      TrainerConfig(batch_size=1))
    events = sorted([(w.window_end, 0, w) for w in ws] +
                    [(f["observed_at"], 1, parse_message(json.dumps(f)).record) for f in fbs],
                    key=lambda e: e[:2])
    trained = {}
    for _, is_fb, rec in events:
        out = ts.on_feedback(rec) if is_fb else ts.on_window(rec)
        for o in (out, ts.drain()):
            trained.update({d.prediction_id: d.ground_truth for d in o.deltas})
    trained.update({d.prediction_id: d.ground_truth for d in ts.flush().deltas})
    assert trained == {w: v for w, v in batch.items() if v is not None}


def test_train_reports_drift_of_each_snapshots_predictions():
    ws = windows(700)
    prep = backfill.prepare("acme", table_of(ws), None, None)
    trainer = TrainerState("acme", ModelConfig(input_width=64),
                           TrainerConfig(snapshot_interval=300, batch_size=8, mode="backfill"))
    seen = []
    assert backfill.choose_head(prep, trainer).num_rows == 0  # auto: numeric labels, linear
    assert trainer.model.head == "linear"
    items = list(backfill.train(prep, trainer, chunk_rows=128, on_progress=seen.append))
    snaps = [i for i in items if hasattr(i, "arrays")]
    drift = [i for i in items if not hasattr(i, "arrays")]
    assert [s.manifest["version"] for s in snaps] == [1, 2, 3]
    assert [s.manifest["windows_in_snapshot"] for s in snaps] == [300, 300, 100]
    assert {s.manifest["mode"] for s in snaps} == {"backfill"}
    assert [(d.snapshot_id, d.sample_count) for d in drift] == [
        ("acme-v000001", 300), ("acme-v000002", 100)]
    assert all(0.0 <= d.drift_p95 <= 1.0 for d in drift)
    assert seen[-1].trained == seen[-1].total == 700 and len(seen) >= 5
    assert prep.counters["trained"] == 700 and prep.counters["snapshots"] == 3
