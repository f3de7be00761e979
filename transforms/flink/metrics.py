"""Values the task thread pushes to Flink's metric system, so Flink never calls Python.

PyFlink's `MetricGroup.gauge(name, fn)` registers a Java gauge that calls `fn` back into Python
from Flink's own metrics thread (MetricQueryService, whenever the REST API, the web UI or a
reporter reads metrics) while the task thread runs Python under the same interpreter: in thread
mode that crashes the JVM in libpython (SIGSEGV). A `PushedValue` is a Flink counter, a plain Java
object, that the task thread moves to the value it wants shown; readers see the last value set.
"""

from __future__ import annotations


def counter(group, name: str):
    """A Flink counter named as Prometheus names counters (`<name>_total`): Flink's Prometheus
    reporter exports the name as it is (runners/monitoring/ has the rules that read them)."""
    return group.counter(name + "_total")


class PushedValue:
    """A gauge-like metric whose value lives on the Java side (a Flink counter set by delta)."""

    def __init__(self, group, name: str):
        self._counter = group.counter(name)
        self._value = 0

    def set(self, value: float) -> None:
        v = int(value)
        if v != self._value:
            self._counter.inc(v - self._value)
            self._value = v

    @property
    def value(self) -> int:
        return self._value


class TenantValues:
    """`upm.tenant.<tenant>.<name>` pushed values, registered on first use, for the first
    `max_tenants` tenants seen (the others are only in the operator's totals)."""

    def __init__(self, group, max_tenants: int):
        self._group = group
        self._max_tenants = max_tenants
        self._values: dict[tuple[str, str], PushedValue] = {}
        self._tenant_groups: dict = {}

    def set(self, tenant: str, name: str, value: float) -> None:
        key = (tenant, name)
        pv = self._values.get(key)
        if pv is None:
            g = self._tenant_groups.get(tenant)
            if g is None:
                if len(self._tenant_groups) >= self._max_tenants:
                    return
                g = self._tenant_groups[tenant] = self._group.add_group("tenant", tenant)
            pv = self._values[key] = PushedValue(g, name)
        pv.set(value)
