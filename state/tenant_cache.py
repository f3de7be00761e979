"""TenantCache: the tenants' pipelines an engine keeps in memory, bounded. No I/O.

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
