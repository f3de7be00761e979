import json

import pyarrow as pa
import pytest

from state.parse import parse_message, reason_class, dead_letter
from state.records import (DeadLetter, DriftScore, FeatureWindow, Feedback, QuarantineRecord,
                           ShadowDelta, SnapshotRecord, arrow_schema, record_from_json,
                           to_arrow_row)

GOOD = {"window_id": "w-000123", "tenant_id": "acme", "window_start": "2026-11-22T10:00:00Z",
        "window_end": "2026-11-22T10:00:01Z", "features": {"f0": 0.12, "clicks": 3.0},
        "label": 0.7}


def msg(**changes):
    d = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return json.dumps(d)


def test_good_window_parses_with_event_time_from_window_end():
    p = parse_message(msg())
    assert p.ok and isinstance(p.record, FeatureWindow)
    assert p.record.window_end - p.record.window_start == 1000
    assert p.record.event_time == p.record.window_end
    assert p.record.features == {"f0": 0.12, "clicks": 3.0}


def test_epoch_millis_and_null_tenant():
    p = parse_message(msg(tenant_id=None, window_start=1795000000000, window_end=1795000001000))
    assert p.record.tenant_id == "default" and p.record.window_end == 1795000001000


def test_feedback_record():
    p = parse_message(json.dumps({"window_id": "w1", "tenant_id": "acme", "label": 1.0,
                                  "observed_at": "2026-11-22T10:00:05Z"}))
    assert isinstance(p.record, Feedback) and p.record.label == 1.0


@pytest.mark.parametrize("raw,cls", [
    ("{not json", "bad_json"),
    (b"\xff\xfe garbage", "bad_json"),
    ("[1, 2]", "wrong_type"),
    (msg(window_id=...), "missing_field"),
    (msg(features=...), "missing_field"),
    (msg(window_end=...), "missing_field"),
    (msg(window_end="yesterday"), "bad_timestamp"),
    (msg(window_end="2026-11-22T10:00:01"), "bad_timestamp"),
    (msg(window_end="2026-11-22T09:00:00Z"), "bad_timestamp"),
    (msg().replace('"f0": 0.12', '"f0": NaN'), "not_finite"),
    (msg().replace('"f0": 0.12', '"f0": Infinity'), "not_finite"),
    (msg(features={"f0": "high"}), "wrong_type"),
    (msg(features={"f0": True}), "wrong_type"),
    (msg(features=[1, 2]), "wrong_type"),
    (msg(label="0.7"), "wrong_type"),
    (msg(window_id=7), "wrong_type"),
    (msg(tenant_id="../etc"), "unsafe_tenant_id"),
    (msg(tenant_id=".."), "unsafe_tenant_id"),
    (msg(tenant_id="a b"), "unsafe_tenant_id"),
    (msg(tenant_id="x" * 129), "unsafe_tenant_id"),
    (msg(tenant_id=5), "wrong_type"),
    (msg(features={f"f{i}": 1.0 for i in range(5000)}), "oversized"),
])
def test_every_bad_input_class_has_its_reason(raw, cls):
    p = parse_message(raw)
    assert not p.ok
    assert reason_class(p.reason) == cls, p.reason


def test_dead_letter_keeps_raw_and_usable_tenant():
    bad = msg(features={"f0": "high"})
    dl = dead_letter(bad, parse_message(bad).reason, "files", 5)
    assert dl.tenant_id == "acme" and dl.raw == bad and dl.reason.startswith("wrong_type")
    evil = dead_letter(msg(tenant_id="../x"), "unsafe_tenant_id: ...", "files", 5)
    assert evil.tenant_id is None
    back = record_from_json(dl.to_json())
    assert back == dl


def test_json_round_trips_of_every_emitted_record():
    recs = [
        DeadLetter("raw", "bad_json: x", "files", 1_000, "acme"),
        ShadowDelta("acme", "acme-trainer", "w1", 0.5, 0.7, 0.2, 1_000, 3, "acme-v000003"),
        DriftScore("acme", 60_000, 0.1, 0.05, 0.3, 100, 600_000),
        QuarantineRecord("acme", "acme-trainer", "acme/0-60000", 0.4, 0.2, 500, "rollback",
                         "acme-v000002", 60_000),
        SnapshotRecord("acme-v000001", "acme", "acme-trainer", 1, "shadow", 5_000, 0, 5_000, 500,
                       0.01, "file:///x", "ab" * 32, 123, "upm-snap-v1", "zstd", None, None),
    ]
    for r in recs:
        text = r.to_json()
        assert json.loads(text)["event"] == r.event
        assert record_from_json(text) == r


def test_feature_window_json_round_trip():
    w = parse_message(msg()).record
    assert FeatureWindow.from_json(w.to_json()) == w


def test_arrow_schemas_hold_the_records():
    w = parse_message(msg()).record
    for rec in (w, ShadowDelta("acme", "t", "w1", 0.5, 0.7, 0.2, 1_000),
                SnapshotRecord("s", "acme", "t", 1, "shadow", 5, 0, 5, 1, 0.1, "u", "h", 1, "f",
                               "zstd")):
        schema = arrow_schema(type(rec))
        table = pa.Table.from_pylist([to_arrow_row(rec)], schema=schema)
        assert table.num_rows == 1
        assert table.schema.field(table.schema.names[0]).name in ("window_id", "event")
    assert arrow_schema(FeatureWindow).field("window_end").type == pa.timestamp("ms", tz="UTC")


def test_a_built_record_is_the_constructed_one():
    """`Record.built` (the hot path's constructor) makes the object the dataclass makes: equal,
    hashing alike, frozen, with every field, for the records built that way."""
    import dataclasses

    fw = dict(window_id="w", tenant_id="acme", window_start=1, window_end=2,
              features={"f": 1.0}, label=None)
    sd = dict(tenant_id="acme", trainer_id="t", prediction_id="w", shadow_prediction=0.5,
              ground_truth=1.0, drift_score=0.25, timestamp=2, model_version=3,
              snapshot_id="s")
    for cls, fields in ((FeatureWindow, fw), (ShadowDelta, sd)):
        assert set(fields) == {f.name for f in dataclasses.fields(cls)}
        built, made = cls.built(**fields), cls(**fields)
        assert built == made and repr(built) == repr(made) and built.to_json() == made.to_json()
        if cls is ShadowDelta:
            assert hash(built) == hash(made)
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.tenant_id = "other"
