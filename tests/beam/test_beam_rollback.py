"""The Beam job's automatic rollback (its Governor, as the Flink job's): the scenario of
tests/core/rollback_scenario.py on `upm run --engine beam`, under the default relative rule."""

from tests.core.rollback_scenario import assert_rolled_back, quarantine_rolls_back


def test_the_beam_job_rolls_back_canary_and_active_and_the_tenant_recovers(tmp_path):
    events = assert_rolled_back(quarantine_rolls_back(tmp_path, "beam", "relative"))
    assert [e["rule"] for e in events[:1]] == ["relative"]
