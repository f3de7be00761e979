"""The parser turns any bytes into a record or a reason, never an exception (hypothesis), and
the inputs that once killed the job become dead letters with the right reason class."""

import json
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.parse import (MAX_DEPTH, MAX_TIME_MS, MIN_TIME_MS, dead_letter,
                         last_resort_dead_letter, parse_message, reason_class)
from state.records import DeadLetter

CLASSES = {"bad_json", "missing_field", "bad_timestamp", "not_finite", "wrong_type",
           "unsafe_tenant_id", "oversized"}  # not `internal:`: that would be a parser bug

GOOD = {"window_id": "w-1", "tenant_id": "acme", "window_start": "2026-11-22T10:00:00Z",
        "window_end": "2026-11-22T10:00:01Z", "features": {"f0": 0.5}, "label": 1.0}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=6),
    max_leaves=30)


def _check(raw):
    p = parse_message(raw)
    if p.ok:
        assert p.reason is None
        p.record.to_json()  # a parsed record always serializes (no NaN, no surrogates lost)
    else:
        assert reason_class(p.reason) in CLASSES, p.reason
        dl = dead_letter(raw, p.reason, "test", 0)
        assert isinstance(dl, DeadLetter)
        json.loads(dl.to_json())
        dl.to_json().encode("utf-8")  # what a sink writes
    return p


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw):
    _check(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(raw):
    _check(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_raises(value):
    _check(json.dumps(value))


field_values = json_values | st.integers(min_value=-(1 << 80), max_value=1 << 80) | st.just(
    "9999-12-31T23:59:59Z") | st.just("x" * 300)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(GOOD) + ["observed_at"]), field_values,
                       max_size=7), st.booleans())
def test_window_shaped_objects_never_raise(changes, drop):
    d = dict(GOOD)
    for k, v in changes.items():
        if drop and k in d:
            del d[k]
        else:
            d[k] = v
    _check(json.dumps(d))


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=10), json_values | st.integers(min_value=-(1 << 2000),
                                                                     max_value=1 << 2000),
                       max_size=8))
def test_any_feature_map_never_raises(features):
    _check(json.dumps({**GOOD, "features": features}))


def _reason(raw):
    p = parse_message(raw)
    assert not p.ok
    return p.reason


def test_huge_integer_feature_is_not_finite():
    raw = json.dumps(GOOD).replace("0.5", "9" * 401)
    assert reason_class(_reason(raw)) == "not_finite"


def test_deep_nesting_is_oversized_without_recursion():
    for raw in ("[" * 100_000, "{\"a\":" * 50_000, json.dumps({**GOOD, "x": [[[[[[[[1]]]]]]]]})
                .replace("[1]", "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))):
        r = _reason(raw)
        assert reason_class(r) == "oversized" and "nested" in r
        dead_letter(raw, r, "t", 0).to_json()


def test_timestamp_outside_range_is_bad_timestamp():
    for v in (1 << 70, -5, 0, 1000, "9999-12-31T23:59:59Z", "1960-01-01T00:00:00Z", 1e300):
        r = _reason(json.dumps({**GOOD, "window_end": v}))
        assert reason_class(r) == "bad_timestamp" and "outside" in r, (v, r)


def test_epoch_seconds_are_refused_with_a_reason_that_says_so():
    r = _reason(json.dumps({**GOOD, "window_start": 1795000000, "window_end": 1795000001}))
    assert reason_class(r) == "bad_timestamp" and "epoch seconds" in r


def test_non_text_message_and_last_resort():
    assert reason_class(_reason(12345)) == "wrong_type"
    dl = last_resort_dead_letter(b"\xff", RuntimeError("boom"), "t", 0)
    assert dl.reason == "internal: RuntimeError: boom" and json.loads(dl.to_json())["raw"]


def test_lone_surrogates_survive_into_a_writable_dead_letter():
    raw = '{"window_id": "\\ud800", "tenant_id": "acme"'  # truncated, with an escaped surrogate
    dl = dead_letter(raw + "\ud800", _reason(raw), "t", 0)
    dl.to_json().encode("utf-8")
    assert dl.tenant_id is None


def _parsed_by_json_only(raw, monkeypatch):
    """What the parser gives with its C decoders (msgspec's typed decode, orjson) switched off
    and nothing remembered: the `json` path."""
    import orjson

    def refuse(_):
        raise orjson.JSONDecodeError("off", "", 0)

    with monkeypatch.context() as m:
        m.setattr("state.parse.orjson.loads", refuse)
        m.setattr("state.parse._typed", lambda raw, max_features: None)
        m.setattr("state.parse._known_times", {})
        m.setattr("state.parse._safe_tenants", set())
        return parse_message(raw)


def _rfc3339(ms: int, offset_minutes: int) -> str:
    tz = timezone(timedelta(minutes=offset_minutes))
    text = datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


valid_times = (st.integers(MIN_TIME_MS, MAX_TIME_MS)
               | st.builds(_rfc3339, st.integers(MIN_TIME_MS, MAX_TIME_MS),
                           st.sampled_from([0, 0, 60, -330])))
numbers = (st.integers(-(1 << 70), 1 << 70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.booleans() | st.sampled_from([0, 1, 0.5, -0.0]))
# Messages a producer could send, nearly all well formed: the typed decoder's ground.
common_messages = st.fixed_dictionaries(
    {"window_id": st.text(max_size=4)},
    optional={"tenant_id": st.sampled_from(["acme", "globex", None, "", "a/b", "..", 7]),
              "window_start": valid_times, "window_end": valid_times,
              "features": st.dictionaries(st.text(max_size=3), numbers, max_size=4),
              "label": numbers | st.none(), "observed_at": valid_times}).map(json.dumps)

fast_path_inputs = (
    common_messages | common_messages.map(str.encode)
    | st.builds(json.dumps, json_values)
    | st.builds(lambda changes: json.dumps({**GOOD, **changes}),
                st.dictionaries(st.sampled_from(sorted(GOOD) + ["observed_at"]),
                                field_values | st.integers(min_value=-(1 << 70),
                                                           max_value=1 << 70), max_size=4))
    | st.builds(lambda f: json.dumps({**GOOD, "features": f}),
                st.dictionaries(st.text(max_size=8), json_values | st.integers(
                    min_value=-(1 << 1100), max_value=1 << 1100), max_size=6))
    | st.builds(lambda t: json.dumps(GOOD).encode("utf-16") if t else json.dumps(GOOD).encode(),
                st.booleans())
    | st.text(max_size=200) | st.binary(max_size=200))


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.function_scoped_fixture])
@given(fast_path_inputs)
def test_the_c_decoders_change_no_result_and_no_reason(monkeypatch, raw):
    """msgspec and orjson are only faster ways to the result `json` gives: the same record, or
    the same reason word for word (integers past 64 bits, NaN, other encodings, lone
    surrogates), with the times and tenants the parser remembers or not."""
    assert parse_message(raw) == _parsed_by_json_only(raw, monkeypatch)


def test_common_messages_take_the_typed_path():
    """The windows and feedback producers send are decoded by msgspec's typed decoder, whatever
    the time form (RFC 3339, epoch ms) or a missing tenant and label; the rest are not."""
    from state.parse import _typed

    feedback = {"window_id": "w-1", "tenant_id": "acme", "label": 0,
                "observed_at": "2026-11-22T10:00:02.5+01:00"}
    for d in (GOOD, {**GOOD, "window_start": 1795000000000, "window_end": 1795000000001},
              {k: v for k, v in GOOD.items() if k not in ("tenant_id", "label")}, feedback):
        assert _typed(json.dumps(d), 256) == parse_message(json.dumps(d)).record, d
    for d in ({**GOOD, "label": True}, {**GOOD, "window_end": 1.5e12},
              {**GOOD, "features": {"f": "1"}}, {**feedback, "label": None},
              {**GOOD, "tenant_id": "a/b"}):
        assert _typed(json.dumps(d), 256) is None, d
