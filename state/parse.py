"""Parse one input message (JSON text or bytes) into a FeatureWindow or a Feedback, or a reason.

Never raises, whatever the bytes: `parse_message` returns `Parsed(record=None, reason=...)` with
a reason from state/reasons.py (a stable class name first, and `internal:` naming the exception
type for anything unforeseen), so dead letters can be counted per class.

Limits: numbers must fit a float64 (a 401-digit integer is `not_finite`); JSON nesting deeper than
MAX_DEPTH is `oversized`; timestamps must lie in [MIN_TIME_MS, MAX_TIME_MS] (1973-03-03 to
2100-01-01 UTC), and a number below MIN_TIME_MS that reads as epoch *seconds* in that range is
refused with a reason saying so (the contract is epoch milliseconds).

Two paths, one result: a message as producers send it is decoded by msgspec against a typed
schema (`_Common`: the types checked in C while it decodes, no Python call per feature), and
anything that schema refuses takes the full path (orjson, then `json`), which names the reason.
The text of a time and a tenant id already found valid are remembered (bounded). A hypothesis
test holds the paths to the same record or reason (tests/core/test_parse_never_raises.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import msgspec
import orjson

from state import reasons
from state.reasons import (DEFAULT_MAX_FEATURES, DEFAULT_TENANT, MAX_DEPTH,  # noqa: F401
                           MAX_ID_LENGTH, MAX_MESSAGE_BYTES, MAX_TIME_MS, MIN_TIME_MS,
                           TENANT_ID_RE, reason_class)
from state.records import DeadLetter, FeatureWindow, Feedback, rfc3339_to_ms


@dataclass(frozen=True)
class Parsed:
    record: FeatureWindow | Feedback | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.record is not None


class _Bad(Exception):
    pass


def _tenant(value) -> str:
    if value is None:
        return DEFAULT_TENANT
    if type(value) is str and value in _safe_tenants:
        return value
    if not isinstance(value, str):
        raise _Bad(reasons.wrong_type(
            "tenant_id", f"must be a string or null, got {type(value).__name__}"))
    if not reasons.is_safe_tenant(value):
        raise _Bad(reasons.unsafe_tenant(value))
    if type(value) is str:
        if len(_safe_tenants) >= 100_000:
            _safe_tenants.clear()
        _safe_tenants.add(value)
    return value


_safe_tenants: set[str] = set()  # tenant ids already found safe


def _id(d: dict, name: str) -> str:
    if name not in d:
        raise _Bad(reasons.missing(name))
    v = d[name]
    if not isinstance(v, str) or not v:
        raise _Bad(reasons.empty_id(name))
    if len(v) > MAX_ID_LENGTH:
        raise _Bad(reasons.long_id(name))
    return v


def _time(d: dict, name: str) -> int:
    if name not in d:
        raise _Bad(reasons.missing(name))
    return _time_value(d[name], name)


def _time_value(v, name: str) -> int:
    if type(v) is str:
        ms = _known_times.get(v)  # a window's end is the next one's start, tenants share times
        return _text_time(v, name) if ms is None else ms
    if isinstance(v, bool):
        raise _Bad(reasons.wrong_type(name, _NOT_A_TIME))
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise _Bad(f"bad_timestamp: {name} is not finite")
        ms = int(v)
        if MIN_TIME_MS <= ms <= MAX_TIME_MS:
            return ms
        return _checked(ms, reasons.epoch_ms(name, ms, repr(v)[:32]))
    if isinstance(v, str):
        return _text_time(v, name)
    raise _Bad(reasons.wrong_type(name, _NOT_A_TIME))


_NOT_A_TIME = "must be an RFC 3339 string or epoch milliseconds"
_known_times: dict[str, int] = {}  # text -> epoch ms, of times read and within the range


def _text_time(v: str, name: str) -> int:
    try:
        ms = rfc3339_to_ms(v)
    except (ValueError, OverflowError) as e:
        raise _Bad(f"bad_timestamp: {name}={v[:64]!r} ({str(e)[:120]})") from None
    _checked(ms, reasons.time_range(name, ms, repr(v[:64])))
    if type(v) is str:  # (not a str subclass: its equality could differ)
        if len(_known_times) >= 100_000:
            _known_times.clear()
        _known_times[v] = ms
    return ms


def _checked(ms: int, reason: str | None) -> int:
    if reason:
        raise _Bad(reason)
    return ms


def _number(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(reasons.wrong_type(name, f"must be a number, got {type(v).__name__}"))
    try:
        f = float(v)
    except OverflowError:
        raise _Bad(reasons.not_finite(f"{name} is outside the float64 range")) from None
    if not math.isfinite(f):
        raise _Bad(reasons.not_finite(name))
    return f


def _label(v) -> float:
    """A label: a number, or a JSON boolean (true = 1.0, false = 0.0: a class label)."""
    return float(v) if isinstance(v, bool) else _number(v, "label")


def _features(d: dict, max_features: int) -> dict[str, float]:
    if "features" not in d:
        raise _Bad(reasons.missing("features"))
    feats = d["features"]
    if not isinstance(feats, dict):
        raise _Bad(reasons.wrong_type("features", "must be an object of name -> number"))
    if len(feats) > max_features:
        raise _Bad(reasons.too_many_features(len(feats), max_features))
    values = list(feats.values())
    if _NUMBER_TYPES.issuperset(map(type, values)):  # nearly every message: no call per value
        try:
            floats = list(map(float, values))
        except OverflowError:
            floats = None
        if floats is not None and math.isfinite(sum(floats)):
            return dict(zip(feats, floats))
    return {k: _number(v, f"features.{k[:64]}") for k, v in feats.items()}


_NUMBER_TYPES = frozenset((int, float))  # by exact type: a bool is not a number here


def _parse_obj(d: dict, max_features: int) -> FeatureWindow | Feedback:
    tenant = _tenant(d.get("tenant_id"))
    window_id = _id(d, "window_id")
    if "features" not in d and "observed_at" in d:
        if "label" not in d or d["label"] is None:
            raise _Bad(reasons.missing("label"))
        return Feedback(window_id=window_id, tenant_id=tenant, label=_label(d["label"]),
                        observed_at=_time(d, "observed_at"))
    start = _time(d, "window_start")
    end = _time(d, "window_end")
    if end < start:
        raise _Bad(reasons.end_before_start(end, start))
    feats = _features(d, max_features)
    label = d.get("label")
    return FeatureWindow(window_id=window_id, tenant_id=tenant, window_start=start, window_end=end,
                         features=feats, label=None if label is None else _label(label))


def parse_message(raw: str | bytes, max_features: int = DEFAULT_MAX_FEATURES) -> Parsed:
    try:
        return _parse(raw, max_features)
    except Exception as e:  # the last resort: no message may fail the job
        return Parsed(None, f"internal: {type(e).__name__}: {str(e)[:200]}")


def _parse(raw, max_features: int) -> Parsed:
    if not isinstance(raw, (str, bytes, bytearray)):
        return Parsed(None, f"wrong_type: message is {type(raw).__name__}, not text")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Parsed(None, f"oversized: message of {len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    depth = _nesting_depth(raw)
    if depth > MAX_DEPTH:
        return Parsed(None, f"oversized: JSON nested deeper than {MAX_DEPTH}")
    record = _typed(raw, max_features)
    if record is not None:
        return Parsed(record)
    try:
        obj = _decode(raw)
    except _Bad as e:
        return Parsed(None, str(e))
    except (ValueError, UnicodeDecodeError) as e:
        return Parsed(None, f"bad_json: {str(e)[:200]}")
    if not isinstance(obj, dict):
        return Parsed(None, f"wrong_type: message must be a JSON object, got {type(obj).__name__}")
    try:
        return Parsed(_parse_obj(obj, max_features))
    except _Bad as e:
        return Parsed(None, str(e))


class _Common(msgspec.Struct):
    """A message as nearly every producer sends it, typed so that msgspec checks it while it
    decodes (in C, with no Python call per feature). It refuses what does not fit (a JSON
    boolean label, a time as a float, a number outside float64, a lone surrogate, any JSON `json`
    would not read), and whatever it refuses takes the full path, which names the reason."""
    window_id: str
    tenant_id: str | None = None
    window_start: str | int | msgspec.UnsetType = msgspec.UNSET
    window_end: str | int | msgspec.UnsetType = msgspec.UNSET
    features: dict[str, float] | msgspec.UnsetType = msgspec.UNSET
    label: float | None = None
    observed_at: str | int | msgspec.UnsetType = msgspec.UNSET


_COMMON = msgspec.json.Decoder(_Common)
_UNSET = msgspec.UNSET


def _typed(raw, max_features: int) -> FeatureWindow | Feedback | None:
    """The record of a common message, exactly as the full path reads it; None for anything
    else (the full path then decides, with its reason)."""
    try:
        m = _COMMON.decode(raw)
    except Exception:  # msgspec's errors, and UnicodeEncodeError for a str with lone surrogates
        return None
    try:
        return _typed_record(m, max_features)
    except _Bad:
        return None


def _typed_record(m: _Common, max_features: int) -> FeatureWindow | Feedback | None:
    tenant = DEFAULT_TENANT if m.tenant_id is None else _tenant(m.tenant_id)
    if not m.window_id or len(m.window_id) > MAX_ID_LENGTH:
        return None
    if m.features is _UNSET:
        if m.observed_at is _UNSET or m.label is None:
            return None
        return Feedback(window_id=m.window_id, tenant_id=tenant, label=m.label,
                        observed_at=_time_value(m.observed_at, "observed_at"))
    if m.window_start is _UNSET or m.window_end is _UNSET or len(m.features) > max_features:
        return None
    start = _time_value(m.window_start, "window_start")
    end = _time_value(m.window_end, "window_end")
    if end < start:
        return None
    return FeatureWindow.built(window_id=m.window_id, tenant_id=tenant, window_start=start,
                               window_end=end, features=m.features, label=m.label)


_OPEN = {ord("["), ord("{")}
_CLOSE = {ord("]"), ord("}")}


def _nesting_depth(raw) -> int:
    """An upper bound of the JSON nesting depth (brackets inside strings count too), found
    without recursion, so json.loads is never asked to recurse past MAX_DEPTH."""
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= MAX_DEPTH:  # nearly every message: no copy
            return 0
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = bytes(raw)
        if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
            return 0
    depth = deepest = 0
    for b in data:
        if b in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif b in _CLOSE:
            depth = max(0, depth - 1)
    return deepest


def _decode(raw):
    """The JSON value of `raw`: orjson (C) where it reads it as `json` does, else `json`, whose
    errors and results are the contract's. orjson refuses what `json` reads differently or not
    at all (NaN/Infinity, lone surrogates, other encodings, infinite numbers), and reads an
    integer past 64 bits as a float: where such a float would be named in a reason (the
    message itself, tenant_id, a time), `json` reads it again."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = _NOT_READ
    if obj is not _NOT_READ and not _maybe_widened(obj):
        return obj
    if not isinstance(raw, str):
        raw = bytes(raw).decode(json.detect_encoding(raw), "surrogatepass")
    return _DECODER.decode(raw)


_NOT_READ = object()
_WIDENED = float(1 << 63)  # orjson reads integers in [-2**63, 2**64) as int, larger as float
_NAMED_FIELDS = ("tenant_id", "window_start", "window_end", "observed_at")


def _maybe_widened(obj) -> bool:
    if type(obj) is dict:
        return any(type(v) is float and abs(v) >= _WIDENED
                   for v in map(obj.get, _NAMED_FIELDS))
    return type(obj) is float and abs(obj) >= _WIDENED


def _reject_constant(name: str):
    raise _Bad(reasons.not_finite(f"JSON constant {name}"))


# One decoder for every message: `json.loads(raw, parse_constant=...)` builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dead_letter(raw: str | bytes, reason: str, source: str, received_at: int) -> DeadLetter:
    """A DeadLetter that keeps the raw text (decoded leniently) and, if readable, the tenant."""
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw).decode("utf-8", errors="replace")
    else:
        text = raw if isinstance(raw, str) else repr(raw)
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be written
    tenant = None
    try:
        if _nesting_depth(text) > MAX_DEPTH or len(text) > MAX_MESSAGE_BYTES:
            raise ValueError("not read")
        obj = json.loads(text)
        t = obj.get("tenant_id") if isinstance(obj, dict) else None
        if t is None and isinstance(obj, dict) and "tenant_id" in obj:
            tenant = DEFAULT_TENANT
        elif isinstance(t, str) and reasons.is_safe_tenant(t):
            tenant = t
    except Exception:  # the raw text is kept either way; only the tenant is unknown
        pass
    return DeadLetter(raw=text[:65536], reason=reason, source=source, received_at=received_at,
                      tenant_id=tenant)


def last_resort_dead_letter(raw, error: Exception, source: str, received_at: int) -> DeadLetter:
    """The dead letter of a message whose handling raised: an engine's guard around parsing."""
    return DeadLetter(raw=repr(raw)[:65536], reason=f"internal: {type(error).__name__}: "
                      f"{str(error)[:200]}", source=source, received_at=received_at)
