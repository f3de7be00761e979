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
