"""The one typed configuration of a UPM job (DESIGN §4): sections of knobs with the seeds'
defaults, loadable from TOML, overridable per tenant (`[tenants.<id>.<section>]`) and by
`section.key=value` strings from the command line. Unknown keys and out-of-range values are
refused with a ConfigError that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

from model.network import HEADS, OPTIMIZERS, ModelConfig
from model.snapshot import COMPRESSIONS
from state.drift import RULES, DriftConfig
from state.replay import ReplayConfig
from state.trainer import MODES, TrainerConfig


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SnapshotsConfig:
    base_path: str = "./upm-data/snapshots"
    compression: str = "zstd"
    retention_days: int = 30


@dataclass(frozen=True)
class AdapterConfig:
    sync_batch_size: int = 100
    sync_timeout_ms: int = 30_000
    max_retries: int = 3
    retry_backoff_ms: int = 1000


@dataclass(frozen=True)
class SourceConfig:
    """Engine watermarks: bounded out-of-orderness and idleness of the input partitions, and
    where event time comes from: each window's own `window_end` after parsing (one watermark
    for the whole input), or, with "kafka", the Kafka records' timestamps, with a watermark
    and idleness per partition made by the Kafka source itself (producers then stamp each
    record with its window's event time)."""
    out_of_orderness_ms: int = 5000
    idleness_ms: int = 30_000
    max_features: int = 4096
    event_time: str = "window_end"


@dataclass(frozen=True)
class ScaleConfig:
    """How many tenants one parallel instance of the keyed step serves (an engine's memory).

    `live_tenants`: tenants whose pipeline stays in memory, the least recently used leaving
    first. All but the most recently used are parked (their arrays compressed: ~6 KB a tenant
    instead of ~47 KB). Keyed state is written after every batch, so a tenant that leaves loses
    nothing; its next record decodes it from keyed state again (the same outcome, ~0.5 ms
    slower). `max_tenants`: tenants it accepts. A record of a tenant it has no state for, once
    it serves that many, is a dead letter (reason `tenant_limit`), counted in
    `tenants_refused`: a producer bug that invents tenant ids fills neither memory nor state.
    It counts the tenants seen since the instance (re)started, so after a restore it may
    admit up to that many more. `tenant_metrics`: tenants with their own
    `upm.tenant.<id>.*` metrics, the first ones seen (a metric series per tenant does not
    scale to 100,000 tenants in Prometheus or the web UI); every tenant counts in the job's
    totals."""
    live_tenants: int = 100_000
    max_tenants: int = 1_000_000
    tenant_metrics: int = 1_000


@dataclass(frozen=True)
class FeaturesConfig:
    """Feature flags. `unified_model` is off by default and enabled per tenant."""
    unified_model: tuple[str, ...] = ()


SECTIONS: dict[str, type] = {
    "trainer": TrainerConfig, "replay": ReplayConfig, "drift": DriftConfig, "model": ModelConfig,
    "snapshots": SnapshotsConfig, "adapter": AdapterConfig, "source": SourceConfig,
    "features": FeaturesConfig, "scale": ScaleConfig,
}

_POS = (1, None)
_NONNEG = (0, None)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "trainer.snapshot_interval": _POS, "trainer.learning_rate": (1e-9, 10.0),
    "trainer.batch_size": (1, 65536), "trainer.max_pending_labels": _NONNEG,
    "trainer.drift_scale": (1e-12, None), "trainer.steps_per_call": (1, 4096),
    "replay.max_buffer_size": _POS, "replay.release_delay_ms": _NONNEG,
    "replay.late_window_tolerance_ms": _NONNEG, "replay.gap_tolerance_ms": _NONNEG,
    "replay.max_future_ms": _POS, "replay.quiet_release_ms": _NONNEG,
    "drift.window_duration_ms": _POS, "drift.drift_threshold": (0.0, 1.0),
    "drift.sample_size": _POS, "drift.evaluation_interval_ms": _POS,
    "drift.evaluation_delay_ms": _NONNEG, "drift.recovery_ratio": (0.0, 1.0),
    "drift.relative_accuracy": (1e-4, 0.01), "drift.min_model_version": _NONNEG,
    "drift.significance": (0.0, None), "drift.min_increase": (0.0, 1.0),
    "model.input_width": (1, 1 << 20), "model.hidden_units": (1, 1 << 16), "model.seed": _NONNEG,
    "model.ftrl_l1": _NONNEG, "model.ftrl_l2": _NONNEG,
    "snapshots.retention_days": _NONNEG,
    "adapter.sync_batch_size": _POS, "adapter.sync_timeout_ms": _POS,
    "adapter.max_retries": _NONNEG, "adapter.retry_backoff_ms": _NONNEG,
    "source.out_of_orderness_ms": _NONNEG, "source.idleness_ms": _NONNEG,
    "source.max_features": _POS,
    "scale.live_tenants": _POS, "scale.max_tenants": _POS, "scale.tenant_metrics": _NONNEG,
}
CHOICES: dict[str, tuple[str, ...]] = {
    "trainer.mode": MODES, "snapshots.compression": COMPRESSIONS, "model.head": HEADS,
    "model.optimizer": OPTIMIZERS, "drift.rule": RULES,
    "model.device": ("auto", "cpu", "gpu"), "model.jit": ("auto", "on", "off"),
    "source.event_time": ("window_end", "kafka"),
}


@dataclass(frozen=True)
class UpmConfig:
    trainer: TrainerConfig = TrainerConfig()
    replay: ReplayConfig = ReplayConfig()
    drift: DriftConfig = DriftConfig()
    model: ModelConfig = ModelConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    adapter: AdapterConfig = AdapterConfig()
    source: SourceConfig = SourceConfig()
    features: FeaturesConfig = FeaturesConfig()
    scale: ScaleConfig = ScaleConfig()
    tenants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, doc: dict[str, Any], base: "UpmConfig | None" = None) -> "UpmConfig":
        cfg = base or cls()
        unknown = set(doc) - set(SECTIONS) - {"tenants"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(SECTIONS))}, tenants)")
        changes = {}
        for name, values in doc.items():
            if name == "tenants":
                continue
            changes[name] = _apply(name, getattr(cfg, name), values)
        tenants = dict(cfg.tenants)
        for tenant, sections in (doc.get("tenants") or {}).items():
            if not isinstance(sections, dict):
                raise ConfigError(f"tenants.{tenant} must be a table of sections")
            for name, values in sections.items():
                if name not in ("trainer", "replay", "drift"):
                    raise ConfigError(f"tenants.{tenant}.{name}: only trainer, replay and drift "
                                      "can be overridden per tenant")
                _apply(name, getattr(cfg, name), values, prefix=f"tenants.{tenant}.")
            tenants[tenant] = {**tenants.get(tenant, {}), **sections}
        return dataclasses.replace(cfg, tenants=tenants, **changes)

    def with_override(self, item: str) -> "UpmConfig":
        """Apply one `section.key=value` (value parsed as TOML, bare words as strings)."""
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        section, name = key.strip().split(".", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        return UpmConfig.from_dict({section: {name: value}}, self)

    def with_overrides(self, items) -> "UpmConfig":
        """`with_override` of each item, in order."""
        cfg = self
        for item in items:
            cfg = cfg.with_override(item)
        return cfg

    def for_tenant(self, tenant_id: str) -> "UpmConfig":
        over = self.tenants.get(tenant_id)
        if not over:
            return self
        return dataclasses.replace(
            self, tenants={}, **{n: _apply(n, getattr(self, n), v) for n, v in over.items()})

    def unified_model_enabled(self, tenant_id: str) -> bool:
        return "*" in self.features.unified_model or tenant_id in self.features.unified_model

    def to_dict(self) -> dict[str, Any]:
        d = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        d["features"]["unified_model"] = list(self.features.unified_model)
        if self.tenants:
            d["tenants"] = self.tenants
        return d


def _apply(section: str, current, values: Any, prefix: str = ""):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}{section} must be a table of keys")
    fields = {f.name: f for f in dataclasses.fields(current)}
    changes = {}
    for key, value in values.items():
        full = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {prefix}{full} (known in [{section}]: "
                              f"{', '.join(sorted(fields))})")
        changes[key] = _check(prefix + full, full, getattr(current, key), value)
    try:
        return dataclasses.replace(current, **changes)
    except ValueError as e:
        raise ConfigError(f"{prefix}{section}: {e}") from None


def _check(label: str, full: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{label} must be a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{label} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{label} must be a finite number, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r}")
        if full in CHOICES and value not in CHOICES[full]:
            raise ConfigError(f"{label} must be one of {', '.join(CHOICES[full])}, got {value!r}")
    lo, hi = RANGES.get(full, (None, None))
    if lo is not None and value < lo:
        raise ConfigError(f"{label} = {value!r} is below its minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{label} = {value!r} is above its maximum {hi}")
    return value
