"""The embedded default of `upm run`: the built-in generator and a fast-learning profile.

The seeds' knob defaults (learning rate 0.001, 1000-window snapshots, one-hour drift windows
with 1000 samples) suit a production stream running for days. The demo stream covers under an
hour of event time, so it uses a profile that learns and judges within minutes. `upm run
--config FILE` or `--set section.key=value` override any of it.
"""

from __future__ import annotations

from state.config import UpmConfig
from state.scenario import ScenarioSpec

DEMO_PROFILE = {
    "trainer": {"snapshot_interval": 500},
    "drift": {"window_duration_ms": 600_000, "sample_size": 300},
}

DEMO_SCENARIO = ScenarioSpec()


def profile_toml(profile: dict) -> str:
    """A config profile (section -> key -> value) as TOML text for `--config`."""
    import json
    return "".join(f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                   for section, values in profile.items())


def demo_config(base: UpmConfig | None = None) -> UpmConfig:
    return UpmConfig.from_dict(DEMO_PROFILE, base)
