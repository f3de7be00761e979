"""The UPM streaming job on Apache Flink (PyFlink DataStream API, thread execution mode).

    Files ─► EventTimestamps ─► TenantKey ─► keyBy(tenant) ─► Tenant ─► SnapshotWriter ─► store
             (Java: the line's time and tenant,            │ (parse -> ReplayBuffer -> Trainer
              transforms/flink/java_steps.py)              │  -> DriftWindow, one keyed
                                                           │  operator: state/tenant.py)
                                                           ├─► dead_letters, duplicates, late,
                                                           │   gaps, stats
                                                           └─► drift_scores, quarantines
                                                                  ─► Governor ─► rollbacks

Event time: EventTimestamps takes it from each line (`source.event_time = "window_end"`: the
window's end, a feedback's observed_at); with "kafka" the Kafka source makes the watermarks per
partition from the records' Kafka timestamps and there is no EventTimestamps step. The Tenant
operator parses each line (state/parse.py) and dead-letters one whose tenant or time it reads
otherwise than the Java steps routed it.

Each side output is written as JSON lines by a FileSink under `<output>/records/<type>/`
(committed on checkpoints; the last checkpoint of a bounded run commits the rest).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pyflink.common import Configuration, Duration, Encoder, Types, WatermarkStrategy
from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import (BucketAssigner, FileSink, FileSource,
                                                       OutputFileConfig, RollingPolicy,
                                                       StreamFormat)

from pyflink.java_gateway import get_gateway

from pipelines.console import quiet_console
from pipelines.options import JobOptions
from pipelines.ports import free_port
from state.records import RECORD_KINDS
from state.tenant import TENANT_KINDS
from transforms.flink import functions as fn
from transforms.flink import java_steps

MAX_PARALLELISM = 128  # key groups: fixed so savepoints restore at any parallelism <= 128


def flink_configuration(opts: JobOptions, remote: bool = False) -> Configuration:
    """Embedded: a mini-cluster in this process that fails fast. Remote: submit to the
    standalone cluster at 127.0.0.1:<rest_port>, which owns restarts and checkpoint storage."""
    cfg = Configuration()
    cfg.set_string("python.execution-mode", "thread")
    cfg.set_string("python.executable", sys.executable)
    cfg.set_string("rest.bind-address", "127.0.0.1")
    cfg.set_string("rest.address", opts.rest_host if remote else "127.0.0.1")
    cfg.set_string("rest.port", str(opts.rest_port or free_port()))
    cfg.set_string("execution.checkpointing.interval", f"{opts.checkpoint_interval_ms}ms")
    cfg.set_string("pipeline.name", opts.job_name)
    jars = [java_steps.steps_jar()]
    if opts.uses_kafka:
        from transforms.flink.kafka import connector_jars
        jars += connector_jars()
    cfg.set_string("pipeline.jars", ";".join(p.resolve().as_uri() for p in jars))
    if remote:
        cfg.set_string("execution.target", "remote")
        if opts.savepoint_path:
            cfg.set_string("execution.state-recovery.path", opts.savepoint_path)
    else:
        cfg.set_string("taskmanager.numberOfTaskSlots", str(max(1, opts.parallelism)))
        cfg.set_string("restart-strategy.type", "none")
        # Checkpoints to files: Flink's default keeps them in the JobManager's memory, capped at
        # 5 MiB, and a job with thousands of tenants (a few KiB of state each) then fails its
        # checkpoints and the job.
        cfg.set_string("execution.checkpointing.storage", "filesystem")
        cfg.set_string("execution.checkpointing.dir",
                       (Path(opts.output_dir) / "flink" / "checkpoints").resolve().as_uri())
    cfg.set_string("metrics.fetcher.update-interval", "1000")  # fresher progress in the UI/CLI
    # RocksDB unless asked otherwise: as fast as the heap with a few tenants (measured), and
    # with 100,000 its memory stays flat and its incremental checkpoints take 0.2 s, not 7 s.
    # A cluster job without a choice takes the cluster's (`upm flink up --state-backend`).
    backend = opts.state_backend or (None if remote else "rocksdb")
    if backend:
        cfg.set_string("state.backend.type", backend)
        cfg.set_string("execution.checkpointing.incremental", str(backend == "rocksdb").lower())
    for key, value in opts.flink_conf:
        cfg.set_string(key, value)
    return cfg


def prepare_process_env(opts: JobOptions, remote: bool = False) -> None:
    """Thread mode loads libpython through the job's interpreter found on PATH (DESIGN §6).
    A local run's mini-cluster keeps its temporary files in the run's directory; a client
    that submits to a cluster runs no job code, so it keeps the system's."""
    bindir = os.path.dirname(sys.executable)
    if not os.environ.get("PATH", "").startswith(bindir + os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    log_dir = Path(opts.output_dir) / "flink" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir.resolve()))
    quiet_console()
    if not remote:
        use_run_temp_dir(temp_dir(opts))


def temp_dir(opts: JobOptions) -> Path:
    return (Path(opts.output_dir) / "flink" / "tmp").resolve()


def use_run_temp_dir(tmp: Path) -> None:
    """Temporary files of the JVM this process starts and of the Python embedded in it
    (TensorFlow's autograph modules, Flink's io, blob and python-dist directories) go to `tmp`,
    not the system's: emptied here of what an earlier run in this output left (a killed run's
    processes never clean up), and of autograph's files after a run (`clean_run_temp_dir`)."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    os.environ["TMPDIR"] = str(tmp)  # Python's tempfile, in the processes started from here
    flag = f"-Djava.io.tmpdir={tmp}"
    args = [a for a in os.environ.get("JVM_ARGS", "").split() if not a.startswith(
        "-Djava.io.tmpdir=")]
    os.environ["JVM_ARGS"] = " ".join([*args, flag])  # PyFlink's gateway JVM reads it


def clean_run_temp_dir(opts: JobOptions) -> None:
    """What the embedded Python leaves: it never runs its exit hooks, which would delete the
    modules TensorFlow's autograph wrote (Flink's own directories go with the JVM)."""
    for f in temp_dir(opts).glob("__autograph_generated_file*"):
        f.unlink(missing_ok=True)


def _file_sink(opts: JobOptions, kind: str) -> FileSink:
    path = str((opts.records_dir / kind).resolve())
    return (FileSink.for_row_format(path, Encoder.simple_string_encoder())
            .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
            .with_output_file_config(OutputFileConfig.builder().with_part_prefix(kind)
                                     .with_part_suffix(".jsonl").build())
            # Roll (and so commit) on every checkpoint: records become visible one checkpoint
            # after they are written, exactly once, instead of after a 60 s rollover.
            .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
            .build())


def _watermarks(opts: JobOptions) -> WatermarkStrategy:
    src = opts.config.source
    return (WatermarkStrategy
            .for_bounded_out_of_orderness(Duration.of_millis(src.out_of_orderness_ms))
            .with_idleness(Duration.of_millis(src.idleness_ms)))


def _source(env: StreamExecutionEnvironment, opts: JobOptions):
    if opts.kafka_bootstrap and opts.kafka_topics:
        from transforms.flink import kafka
        src = kafka.source(opts.kafka_bootstrap, list(opts.kafka_topics), opts.kafka_group,
                           opts.kafka_bounded)
        # With Kafka event time the source applies the strategy to each partition (split) on
        # the records' Kafka timestamps: the watermark is the least over partitions that are
        # not idle, and a partition with nothing for `idleness_ms` stops holding it back.
        watermarks = _watermarks(opts) if opts.kafka_event_time else WatermarkStrategy.no_watermarks()
        return env.from_source(src, watermarks, "Kafka").uid("kafka-source")
    paths = [str(Path(p).resolve()) for p in opts.inputs]
    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *paths)
    if opts.follow:
        builder = builder.monitor_continuously(Duration.of_millis(opts.follow_interval_ms))
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), "Files").uid(
        "files-source")


def _keyed_by_tenant_in_event_time(lines: DataStream, watermarks: WatermarkStrategy | None
                                   ) -> KeyedStream:
    """The raw lines keyed by tenant, with their event times, both read in Java
    (transforms/flink/java_steps.py): the Tenant operator is then the job's only Python call
    per line. (PyFlink's own `assign_timestamps_and_watermarks` and `key_by` with Python
    functions would add a Python operator each, and a Python Parse before them another. Taking
    the Parse call out measured within noise at p=1 (README, "Where the time goes"): the
    Tenant operator's thread is the job's critical path, and parsing moved onto it.)

    The key step emits Row(tenant, line), the shape PyFlink's `key_by` builds, and the same
    Java KeyByKeySelector keys it on field 0. With no `watermarks` (Kafka event time) the
    source's watermarks pass through as they are."""
    jvm = get_gateway().jvm
    fields = java_steps.line_fields(jvm)
    timed = lines._j_data_stream
    if watermarks is not None:
        timed = (timed.assignTimestampsAndWatermarks(
                     watermarks._j_watermark_strategy.withTimestampAssigner(
                         jvm.upm.LineEventTime(fields)))
                 .name("EventTimestamps").uid("event-timestamps"))
    keyed = (timed.map(jvm.upm.LineKey(fields), fn.KEYED_TYPE.get_java_type_info())
             .name("TenantKey").uid("tenant-key"))
    return KeyedStream(keyed.keyBy(jvm.KeyByKeySelector(),
                                   Types.ROW([Types.STRING()]).get_java_type_info()),
                       fn.ELEMENT_TYPE, lines)


def build(env: StreamExecutionEnvironment, opts: JobOptions) -> None:
    """Add the UPM job to `env`."""
    cfg = opts.config
    lines = _source(env, opts)
    keyed = _keyed_by_tenant_in_event_time(
        lines, None if opts.kafka_event_time else _watermarks(opts))
    tenants = (keyed
               .process(fn.TenantFunction(cfg, opts.shadow_deltas,
                                          opts.store_root if opts.warm_start else None,
                                          times_from_lines=not opts.kafka_event_time),
                        output_type=Types.PICKLED_BYTE_ARRAY())
               .name("Tenant").uid("tenant"))
    if cfg.model.device == "gpu":
        # Place the per-tenant path (its Trainer) in slots that carry a GPU (the cluster's
        # external resource "gpu").
        from pyflink.datastream.slot_sharing_group import SlotSharingGroup
        tenants = tenants.slot_sharing_group(
            SlotSharingGroup.builder("trainer-gpu").set_cpu_cores(1.0)
            .set_task_heap_memory_mb(512).set_task_off_heap_memory_mb(1024)
            .set_external_resource("gpu", 1.0).build())
    snapshot_records = (tenants
                        .process(fn.SnapshotWriter(opts.store_root, cfg.snapshots.compression,
                                                    cfg.scale.tenant_metrics),
                                 output_type=Types.STRING())
                        .name("SnapshotWriter").uid("snapshot-writer"))
    side = {kind: tenants.get_side_output(fn.TAGS[kind]) for kind in TENANT_KINDS}
    drift_records = side["drift_scores"].union(side["quarantines"])
    governed = (drift_records.flat_map(fn.Governor(opts.store_root, opts.policy_path),
                          output_type=Types.STRING())
                .name("Governor").uid("governor").set_parallelism(1))
    sinks = {kind: [side.get(kind)] for kind in RECORD_KINDS}
    sinks["snapshots"] = [snapshot_records]
    sinks["refusals"] = [snapshot_records.get_side_output(fn.REFUSALS)]
    sinks["rollbacks"] = [governed]
    if not opts.shadow_deltas:
        del sinks["shadow_deltas"]
    for kind, streams in sinks.items():
        stream = streams[0].union(*streams[1:]) if len(streams) > 1 else streams[0]
        stream.sink_to(_file_sink(opts, kind)).name(f"{kind}-sink").uid(f"{kind}-sink")
        if opts.kafka_bootstrap and opts.kafka_output_prefix:
            from transforms.flink import kafka
            topic = f"{opts.kafka_output_prefix}.{kind}"
            stream.sink_to(kafka.sink(opts.kafka_bootstrap, topic, exactly_once=True,
                                      transactional_prefix=f"{opts.job_name}-{topic}")
                           ).name(f"{kind}-kafka").uid(f"{kind}-kafka")


def environment(opts: JobOptions, remote: bool = False
                ) -> tuple[StreamExecutionEnvironment, Configuration]:
    prepare_process_env(opts, remote)
    conf = flink_configuration(opts, remote)
    if remote:
        # get_execution_environment() always builds a local mini-cluster environment outside
        # `flink run`; the plain Java constructor honours execution.target = remote.
        from pyflink.java_gateway import get_gateway
        jvm = get_gateway().jvm
        env = StreamExecutionEnvironment(
            jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment(
                conf._j_configuration))
    else:
        env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(opts.parallelism)
    env.set_max_parallelism(MAX_PARALLELISM)
    return env, conf


def submit(opts: JobOptions) -> str:
    """Submit the job, detached, to the standalone cluster at `opts.rest_port`; the job id."""
    env, _ = environment(opts, remote=True)
    build(env, opts)
    client = env.execute_async(opts.job_name)
    return str(client.get_job_id())
