"""Options of a UPM job run, shared by the engines: where input comes from, where output goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from state.config import UpmConfig

@dataclass(frozen=True)
class JobOptions:
    inputs: tuple[str, ...]            # JSON-lines files or directories
    output_dir: str = "./upm-data"
    config: UpmConfig = field(default_factory=UpmConfig)
    parallelism: int = 1
    shadow_deltas: bool = False
    follow: bool = False               # monitor directories for new files (unbounded)
    follow_interval_ms: int = 2000
    checkpoint_interval_ms: int = 2000
    rest_port: int = 0                 # 0: pick a free port
    rest_host: str = "127.0.0.1"       # the cluster's JobManager, for submissions
    job_name: str = "upm-stream"
    policy_path: str | None = None     # promotion policy (auto-rollback on quarantine)
    savepoint_path: str | None = None  # resume from this savepoint (cluster submissions)
    warm_start: bool = True                 # empty tenants start from their newest snapshot
    kafka_bootstrap: str | None = None      # read windows and feedback from Kafka instead of files
    kafka_topics: tuple[str, ...] = ()
    kafka_group: str = "upm-stream"
    kafka_bounded: bool = False             # stop at the offsets that are latest at start
    kafka_output_prefix: str | None = None  # also write records to topics <prefix>.<kind>
    state_backend: str | None = None  # "hashmap" or "rocksdb"; None: the engine's default
    flink_conf: tuple[tuple[str, str], ...] = ()  # extra Flink configuration, applied last

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap and (self.kafka_topics or self.kafka_output_prefix))

    @property
    def kafka_event_time(self) -> bool:
        """Event time and watermarks from the Kafka source (per partition), not from Parse."""
        return bool(self.kafka_bootstrap and self.kafka_topics
                    and self.config.source.event_time == "kafka")

    @property
    def records_dir(self) -> Path:
        return Path(self.output_dir) / "records"

    @property
    def store_root(self) -> str:
        return store_root(self.output_dir, self.config)


def store_root(output_dir: str, config: UpmConfig) -> str:
    """The store (snapshots/ and registry/) is the output dir, unless the config names another
    `snapshots.base_path`, whose parent is then the store root."""
    base = config.snapshots.base_path
    if base == UpmConfig().snapshots.base_path:
        return str(Path(output_dir))
    if "://" in base:  # gs://bucket/prefix/snapshots -> gs://bucket/prefix
        return base.rstrip("/").rsplit("/", 1)[0]
    return str(Path(base).parent)
