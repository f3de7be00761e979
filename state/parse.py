"""Parse one input message (JSON text or bytes) into a FeatureWindow or a Feedback, or a reason.

Never raises on bad input: `parse_message` returns `Parsed(record=None, reason=...)` with a
reason that starts with a stable class name (`bad_json:`, `missing_field:`, `bad_timestamp:`,
`not_finite:`, `wrong_type:`, `unsafe_tenant_id:`, `oversized:`, ...), so dead letters can be
counted per class.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from state.records import DeadLetter, FeatureWindow, Feedback, rfc3339_to_ms

DEFAULT_TENANT = "default"
TENANT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_FEATURES = 4096
MAX_ID_LENGTH = 256


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
    if not isinstance(value, str):
        raise _Bad(f"wrong_type: tenant_id must be a string or null, got {type(value).__name__}")
    if not TENANT_ID_RE.fullmatch(value) or value in (".", ".."):
        raise _Bad(f"unsafe_tenant_id: {value[:64]!r} is not [A-Za-z0-9._-]{{1,128}}")
    return value


def _id(d: dict, name: str) -> str:
    if name not in d:
        raise _Bad(f"missing_field: {name}")
    v = d[name]
    if not isinstance(v, str) or not v:
        raise _Bad(f"wrong_type: {name} must be a non-empty string")
    if len(v) > MAX_ID_LENGTH:
        raise _Bad(f"oversized: {name} longer than {MAX_ID_LENGTH}")
    return v


def _time(d: dict, name: str) -> int:
    if name not in d:
        raise _Bad(f"missing_field: {name}")
    v = d[name]
    if isinstance(v, bool):
        raise _Bad(f"wrong_type: {name} must be an RFC 3339 string or epoch milliseconds")
    if isinstance(v, (int, float)):
        if not math.isfinite(v) or v < 0:
            raise _Bad(f"bad_timestamp: {name}={v!r}")
        return int(v)
    if isinstance(v, str):
        try:
            return rfc3339_to_ms(v)
        except (ValueError, OverflowError) as e:
            raise _Bad(f"bad_timestamp: {name}={v[:64]!r} ({e})") from None
    raise _Bad(f"wrong_type: {name} must be an RFC 3339 string or epoch milliseconds")


def _number(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"wrong_type: {name} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise _Bad(f"not_finite: {name}")
    return f


def _features(d: dict, max_features: int) -> dict[str, float]:
    if "features" not in d:
        raise _Bad("missing_field: features")
    feats = d["features"]
    if not isinstance(feats, dict):
        raise _Bad("wrong_type: features must be an object of name -> number")
    if len(feats) > max_features:
        raise _Bad(f"oversized: {len(feats)} features > max {max_features}")
    return {str(k): _number(v, f"features.{k}") for k, v in feats.items()}


def _parse_obj(d: dict, max_features: int) -> FeatureWindow | Feedback:
    tenant = _tenant(d.get("tenant_id"))
    window_id = _id(d, "window_id")
    if "features" not in d and "observed_at" in d:
        if "label" not in d or d["label"] is None:
            raise _Bad("missing_field: label")
        return Feedback(window_id=window_id, tenant_id=tenant, label=_number(d["label"], "label"),
                        observed_at=_time(d, "observed_at"))
    start = _time(d, "window_start")
    end = _time(d, "window_end")
    if end < start:
        raise _Bad(f"bad_timestamp: window_end before window_start ({end} < {start})")
    feats = _features(d, max_features)
    label = d.get("label")
    return FeatureWindow(window_id=window_id, tenant_id=tenant, window_start=start, window_end=end,
                         features=feats, label=None if label is None else _number(label, "label"))


def parse_message(raw: str | bytes, max_features: int = DEFAULT_MAX_FEATURES) -> Parsed:
    if len(raw) > MAX_MESSAGE_BYTES:
        return Parsed(None, f"oversized: message of {len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except _Bad as e:
        return Parsed(None, str(e))
    except (ValueError, UnicodeDecodeError) as e:
        return Parsed(None, f"bad_json: {e}")
    if not isinstance(obj, dict):
        return Parsed(None, f"wrong_type: message must be a JSON object, got {type(obj).__name__}")
    try:
        return Parsed(_parse_obj(obj, max_features))
    except _Bad as e:
        return Parsed(None, str(e))


def _reject_constant(name: str):
    raise _Bad(f"not_finite: JSON constant {name}")


def dead_letter(raw: str | bytes, reason: str, source: str, received_at: int) -> DeadLetter:
    """A DeadLetter that keeps the raw text (decoded leniently) and, if readable, the tenant."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    tenant = None
    try:
        obj = json.loads(text)
        t = obj.get("tenant_id") if isinstance(obj, dict) else None
        if t is None and isinstance(obj, dict) and "tenant_id" in obj:
            tenant = DEFAULT_TENANT
        elif isinstance(t, str) and TENANT_ID_RE.fullmatch(t) and t not in (".", ".."):
            tenant = t
    except ValueError:
        pass
    return DeadLetter(raw=text[:65536], reason=reason, source=source, received_at=received_at,
                      tenant_id=tenant)


def reason_class(reason: str) -> str:
    return reason.split(":", 1)[0]
