"""The generator's scenario through the engine-free core gives exactly the expected accounting."""

from pipelines.local_job import run_local
from runners.embedded import demo_config
from state.scenario import ScenarioSpec, generate

SPEC = ScenarioSpec(tenants=3, windows_per_tenant=2000)


def test_scenario_accounting_and_drift_through_the_core():
    lines, expected = generate(SPEC)
    run = run_local(lines, demo_config())
    for tenant, exp in expected.tenants.items():
        got = run.counts(tenant)
        for k in ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending", "gaps"):
            assert got[k] == exp[k], (tenant, k, got[k], exp[k])
        assert got["windows_in"] == (got["trained"] + got["duplicates"] + got["late"]
                                     + got["dead_letters"] + got["pending"])
        assert got["snapshots"] == exp["trained"] // 500
        assert got["quarantines"] == (1 if tenant == expected.drift_tenant else 0), tenant
    assert len(run.dead_letters) == expected.totals()["dead_letters"]


def test_generator_is_deterministic():
    assert generate(ScenarioSpec(tenants=2, windows_per_tenant=300))[0] == generate(
        ScenarioSpec(tenants=2, windows_per_tenant=300))[0]


def test_a_tenant_past_max_tenants_is_dead_lettered_and_the_rest_are_untouched():
    """`scale.max_tenants`: the first tenants seen are served exactly as without the limit; every
    record of a later one is a dead letter saying why, and the counts still add up."""
    lines, expected = generate(ScenarioSpec(tenants=5, windows_per_tenant=200, seed=4,
                                            drift_tenant=None))
    free = run_local(lines, demo_config())
    limited = run_local(lines, demo_config().with_override("scale.max_tenants=3"))
    first = list(dict.fromkeys(t for t in free.tenants if free.counts(t)["trained"]))[:3]
    refused = [r for r in limited.dead_letters if r.startswith("tenant_limit:")]
    assert refused and all("scale.max_tenants=3" in r for r in refused)
    for tenant in expected.tenants:
        got = limited.counts(tenant)
        if tenant in first:
            assert got == free.counts(tenant)
        else:  # its windows and its feedback
            assert got["trained"] == 0 and got["windows_in"] == got["dead_letters"] \
                > expected.tenants[tenant]["windows_in"]
    assert len(refused) == sum(limited.counts(t)["dead_letters"] - expected.tenants[t][
        "dead_letters"] for t in expected.tenants if t not in first)
