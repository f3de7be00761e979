"""The dead-letter reasons and the input limits they enforce: one text per rule.

The per-message parser (state/parse.py) and the columnar window table (state/window_table.py)
check the same contract in two shapes; both build their reasons here, so a bad window gets the
same reason whichever path read it. A reason starts with a stable class name (`bad_json:`,
`missing_field:`, `bad_timestamp:`, `not_finite:`, `wrong_type:`, `unsafe_tenant_id:`,
`oversized:`, `tenant_limit:`, `read_differently:`, `internal:`); dead letters are counted per
class (`reason_class`).
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
TENANT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_FEATURES = 4096
MAX_ID_LENGTH = 256
MAX_DEPTH = 64
MIN_TIME_MS = 100_000_000_000  # 1973-03-03T09:46:40Z: below it, epoch seconds are likelier
MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
# The routing key of a line whose tenant an engine's key step could not read (never a valid
# tenant id: `!` is outside TENANT_ID_RE); its keyed operator dead-letters the line.
UNREAD_TENANT_KEY = "!unread"


def read_differently(name: str, routed: str, parsed: str) -> str:
    """A message the engine's routing step (the Flink job's Java key and event-time step) read
    otherwise than the parser: kept out of a tenant it may not belong to."""
    return (f"read_differently: {name} routed as {routed[:64]} but parsed as {parsed[:64]}; "
            "send it as RFC 3339 with an offset or Z, or as epoch milliseconds")


def reason_class(reason: str) -> str:
    return reason.split(":", 1)[0]


def is_safe_tenant(value: str) -> bool:
    return bool(TENANT_ID_RE.fullmatch(value)) and value not in (".", "..")


def missing(name: str) -> str:
    return f"missing_field: {name}"


def wrong_type(name: str, expected: str) -> str:
    return f"wrong_type: {name} {expected}"


def unsafe_tenant(value: str) -> str:
    return f"unsafe_tenant_id: {value[:64]!r} is not [A-Za-z0-9._-]{{1,128}}"


def empty_id(name: str) -> str:
    return wrong_type(name, "must be a non-empty string")


def long_id(name: str) -> str:
    return f"oversized: {name} longer than {MAX_ID_LENGTH}"


def too_many_features(count: int, max_features: int) -> str:
    return f"oversized: {count} features > max {max_features}"


def tenant_limit(max_tenants: int) -> str:
    return (f"tenant_limit: this parallel instance already serves scale.max_tenants="
            f"{max_tenants} tenants; raise it, or the parallelism, if they are real")


def outside_time_range(name: str, shown: str) -> str:
    return f"bad_timestamp: {name}={shown} is outside 1973-03-03..2100-01-01 UTC"


def end_before_start(end: int, start: int) -> str:
    return f"bad_timestamp: window_end before window_start ({end} < {start})"


def not_finite(name: str) -> str:
    return f"not_finite: {name}"


def time_range(name: str, ms: int, shown: str) -> str | None:
    """The reason a time is refused, or None: the contract is epoch milliseconds in
    [MIN_TIME_MS, MAX_TIME_MS]."""
    return None if MIN_TIME_MS <= ms <= MAX_TIME_MS else outside_time_range(name, shown)


def epoch_ms(name: str, ms: int, shown: str) -> str | None:
    """As `time_range`, for a number, which may be epoch *seconds* by mistake (said so)."""
    if MIN_TIME_MS // 1000 <= ms < MAX_TIME_MS // 1000:
        return (f"bad_timestamp: {name}={shown} looks like epoch seconds; "
                "the contract is epoch milliseconds")
    return time_range(name, ms, shown)
