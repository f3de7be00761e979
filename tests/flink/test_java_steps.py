"""The job's Java steps (transforms/flink/java_steps.py) route a raw line by the tenant and the
event time the Python parser reads from it: the same values for every message the contract
allows (RFC 3339 times with any offset and up to microseconds, epoch milliseconds as integers
or floats, a missing or null tenant_id), and no exception for any text. A line they read
otherwise is dead-lettered by the Tenant operator (`read_differently`), never trained under
another tenant or time; the Flink job tests run every scenario line through them."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import flink_job
from pipelines.options import JobOptions
from state.parse import parse_message
from state.reasons import DEFAULT_TENANT, MAX_TIME_MS, MIN_TIME_MS, UNREAD_TENANT_KEY
from transforms.flink import java_steps

UNREAD_TIME = -(1 << 63)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    opts = JobOptions(inputs=(str(out / "in.jsonl"),), output_dir=str(out))
    flink_job.environment(opts)  # the gateway JVM, with the steps jar on its class path
    from pyflink.java_gateway import get_gateway
    return Router(java_steps.line_fields(get_gateway().jvm))


class Router:
    """The Java `upm.LineFields`, named plainly when hypothesis prints an example."""

    def __init__(self, java):
        self.java = java

    def __repr__(self):
        return "Router(upm.LineFields)"


def routed(fields: Router, line: str) -> tuple[str, int]:
    return fields.java.tenant(line), fields.java.eventTime(line)


def rfc3339(dt: datetime, sep: str, micros: bool, zulu: str) -> str:
    text = dt.isoformat(sep=sep, timespec="microseconds" if micros else "milliseconds")
    return text.replace("+00:00", zulu) if zulu else text


times = st.one_of(
    st.builds(rfc3339,
              st.datetimes(min_value=datetime(1973, 3, 4), max_value=datetime(2099, 12, 30),
                           timezones=st.sampled_from([timezone.utc,
                                                      timezone(timedelta(hours=5, minutes=30)),
                                                      timezone(timedelta(hours=-8))])),
              st.sampled_from(["T", "t", " "]), st.booleans(), st.sampled_from(["", "Z", "z"])),
    st.integers(min_value=MIN_TIME_MS - 10, max_value=MAX_TIME_MS + 10),
    st.floats(min_value=MIN_TIME_MS, max_value=MAX_TIME_MS, allow_nan=False),
    st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=30))
tenants = st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), st.none(),
                    st.text(max_size=10), st.integers(), st.just(UNREAD_TENANT_KEY))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenant=tenants, when=times, feedback=st.booleans(), drop_tenant=st.booleans())
def test_the_route_is_what_the_parser_reads(fields, tenant, when, feedback, drop_tenant):
    msg = {"window_id": "w1", "tenant_id": tenant}
    if drop_tenant:
        del msg["tenant_id"]
    if feedback:
        msg.update(observed_at=when, label=1.0)
    else:
        msg.update(window_start=MIN_TIME_MS, window_end=when, features={"x": 1.0})
    line = json.dumps(msg)
    key, at = routed(fields, line)
    parsed = parse_message(line)
    if parsed.ok:
        assert (key, at) == (parsed.record.tenant_id, parsed.record.event_time), line
    strict = "Infinity" not in line and "NaN" not in line  # JSON as the standard has it
    if (tenant is None or drop_tenant) and strict:
        assert key == DEFAULT_TENANT
    assert at == UNREAD_TIME or MIN_TIME_MS <= at <= MAX_TIME_MS


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(
    lambda b: b.decode("utf-8", "replace"))))
def test_any_text_routes_without_an_exception(fields, text):
    key, at = routed(fields, text)
    assert isinstance(key, str) and isinstance(at, int)


def test_what_cannot_be_read_goes_to_the_unread_key(fields):
    for line in ("", "null", "[1, 2]", "{", '{"tenant_id": 7}', "[" * 100_000,
                 '{"tenant_id": "a"} trailing'):
        assert routed(fields, line)[0] == UNREAD_TENANT_KEY, line
    assert routed(fields, '{"tenant_id": "a", "tenant_id": "b"}')[0] == "b"  # as json: the last
    # outside the contract's range, or not RFC 3339: the line moves no watermark
    for when in ('"9999-12-31T23:59:59Z"', "1795000001", '"2026-W47-7T00:00:00Z"', "true"):
        assert routed(fields, '{"tenant_id": "a", "window_end": %s}' % when)[1] == UNREAD_TIME


def test_rfc3339_in_its_forms_routes_to_the_parsers_time(fields):
    from state.records import rfc3339_to_ms
    for when in ("2026-11-22T00:00:01Z", "2026-11-22t00:00:01.5z", "2026-11-22 00:00:01.123Z",
                 "2026-11-22T05:30:01.123456+05:30", "2026-11-21T16:00:01.0005-08:00",
                 "2026-11-22T00:00:01.0015Z", "2026-11-22T00:00:01.9999995Z"[:26] + "Z"):
        line = '{"tenant_id": "a", "window_end": "%s"}' % when
        assert routed(fields, line) == ("a", rfc3339_to_ms(when)), when
    assert routed(fields, '{"observed_at": 1763769601000.9, "tenant_id": "b"}') == (
        "b", 1763769601000)
