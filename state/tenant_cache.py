"""How many tenants an engine instance holds. No I/O.

TenantCache: the tenants' pipelines it keeps in memory, bounded. TenantLimit: the tenants it
accepts at all (`scale.max_tenants`).

An engine that writes a tenant's state after every batch (the Flink operator) can drop a
pipeline at any time between batches and decode it from keyed state when the tenant next has
work; the outcome is the same, only slower. This keeps the `live_max` most recently used and
drops the least recently used beyond that. Of those, only the `hot_max` most recently used may
hold their arrays decoded; one that falls out of that set is parked (TenantPipeline.park: its
trainer's arrays compressed, decoded again when it next trains), which is what lets 100,000
tenants fit: ~6 KB a parked tenant instead of ~47 KB.
"""

from __future__ import annotations

from collections import OrderedDict

from state.reasons import tenant_limit
from state.tenant import TenantPipeline


class TenantCache:
    def __init__(self, live_max: int, hot_max: int):
        self.live_max = live_max
        self.hot_max = max(1, min(hot_max, live_max))
        self._live: OrderedDict[str, TenantPipeline] = OrderedDict()  # least recent first
        self._hot: OrderedDict[str, TenantPipeline] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, tenant: str) -> bool:
        return tenant in self._live

    def get(self, tenant: str) -> TenantPipeline | None:
        """The tenant's pipeline if it is kept, now the most recently used."""
        p = self._live.get(tenant)
        if p is not None:
            self._live.move_to_end(tenant)
            self._touch(tenant, p)
        return p

    def put(self, tenant: str, p: TenantPipeline) -> None:
        """Keep a pipeline just decoded or created; the least recently used one beyond
        `live_max` is dropped (its state must have been written after its last batch)."""
        self._live[tenant] = p
        self._live.move_to_end(tenant)
        if len(self._live) > self.live_max:
            gone, _ = self._live.popitem(last=False)
            self._hot.pop(gone, None)
        self._touch(tenant, p)

    def _touch(self, tenant: str, p: TenantPipeline) -> None:
        hot = self._hot
        if tenant in hot:
            hot.move_to_end(tenant)
            return
        hot[tenant] = p
        if len(hot) > self.hot_max:
            hot.popitem(last=False)[1].park()


class TenantLimit:
    """`scale.max_tenants`: the tenants one engine instance accepts. A tenant is admitted when
    first seen while fewer than `max_tenants` are, or whenever it already has state there
    (`has_state`, asked only at the limit: after a restore the count starts again, so it may
    admit up to that many more); a record of one not admitted is a dead letter (`reason`)."""

    def __init__(self, max_tenants: int):
        self.max_tenants = max_tenants
        self._admitted: set[str] = set()

    def admits(self, tenant: str, has_state=lambda: False) -> bool:
        if tenant in self._admitted:
            return True
        if len(self._admitted) >= self.max_tenants and not has_state():
            return False
        self._admitted.add(tenant)
        return True

    @property
    def reason(self) -> str:
        return tenant_limit(self.max_tenants)
