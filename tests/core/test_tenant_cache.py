"""TenantCache: the bounded set of pipelines an engine keeps in memory (state/tenant_cache.py)."""

from state.config import UpmConfig
from state.tenant import TenantPipeline
from state.tenant_cache import TenantCache


def _pipelines(n):
    return {f"t{i}": TenantPipeline.new(f"t{i}", UpmConfig()) for i in range(n)}


def _parked(p) -> bool:
    return p.trainer._parked is not None


def test_the_least_recently_used_leave_and_only_the_hot_keep_their_arrays():
    ps = _pipelines(6)
    cache = TenantCache(live_max=4, hot_max=2)
    for name in ("t0", "t1", "t2", "t3"):
        cache.put(name, ps[name])
    assert [_parked(ps[n]) for n in ("t0", "t1", "t2", "t3")] == [True, True, False, False]
    assert cache.get("t0") is ps["t0"]  # now the most recent: t1 is the least
    cache.put("t4", ps["t4"])
    assert "t1" not in cache and cache.get("t1") is None and len(cache) == 4
    assert not _parked(ps["t4"]) and _parked(ps["t3"])  # hot: t0, t4


def test_a_parked_tenant_goes_on_exactly_as_one_never_parked():
    cfg = UpmConfig()
    a, b = TenantPipeline.new("t", cfg), TenantPipeline.new("t", cfg)
    cache = TenantCache(live_max=10, hot_max=1)
    from state.records import FeatureWindow
    for i in range(40):
        w = FeatureWindow(window_id=f"w{i}", tenant_id="t", window_start=10**12 + i * 1000,
                          window_end=10**12 + (i + 1) * 1000, features={"x": float(i % 7)},
                          label=float(i % 2))
        cache.put("t", a)
        cache.put("other", TenantPipeline.new("other", cfg))  # parks a
        assert _parked(a)
        out_a, out_b = a.on_window(w), b.on_window(w)
        assert [d.shadow_prediction for d in out_a.deltas] == \
            [d.shadow_prediction for d in out_b.deltas]
    a.end(), b.end()
    assert a.trainer.trained == b.trainer.trained > 0
    assert a.parts() == b.parts()


def test_the_limit_admits_the_first_tenants_and_any_with_state():
    from state.tenant_cache import TenantLimit
    limit = TenantLimit(2)
    assert limit.admits("a") and limit.admits("b") and limit.admits("a")
    assert not limit.admits("c")
    assert limit.admits("d", has_state=lambda: True)  # restored: it was admitted before
    assert "scale.max_tenants=2" in limit.reason and limit.reason.startswith("tenant_limit:")
