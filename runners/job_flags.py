"""The flags every job command shares (`upm run`, `upm submit`, `upm backfill`) and what they
become: the config (TOML file, `--set`, `--<section>.<knob>`; this is where the config file is
read) and the JobOptions of a run."""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path

from runners.errors import UserError
from state.config import SECTIONS, ConfigError, UpmConfig


def load_config(path: str | None, overrides: list[str] | None = None,
                base: UpmConfig | None = None) -> UpmConfig:
    """`base` (default UpmConfig()) with the TOML file at `path` and `section.key=value`
    overrides applied, in that order."""
    cfg = base or UpmConfig()
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read --config {path}: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from None
        cfg = UpmConfig.from_dict(doc, cfg)
    return cfg.with_overrides(overrides or ())


def add_knob_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("knobs (each also a --config TOML key; see DESIGN §4)")
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            g.add_argument(f"--{section}.{f.name}", dest=f"knob:{section}.{f.name}", metavar="V",
                           help=f"default {f.default!r}")


def config_from_args(args, base: UpmConfig) -> UpmConfig:
    cfg = load_config(args.config, args.set, base)
    for key, value in vars(args).items():
        if key.startswith("knob:") and value is not None:
            cfg = cfg.with_override(f"{key[5:]}={value}")
    return cfg


def job_options(args, fresh_records: bool = True):
    """JobOptions from the shared job flags; with no --input, the embedded generator's stream
    (written under the output dir) and the demo profile. Returns (options, expected or None)."""
    from pipelines.options import JobOptions
    from runners.embedded import DEMO_SCENARIO, demo_config
    from state.scenario import generate

    external = bool(args.input or args.kafka_topic or getattr(args, "pubsub_subscription", None))
    cfg = config_from_args(args, UpmConfig() if external else demo_config())
    if cfg.source.event_time == "kafka" and not args.kafka_topic:
        raise UserError('source.event_time = "kafka" takes event time from Kafka record '
                        'timestamps: it needs --kafka-topic (files and Pub/Sub carry none; '
                        'use "window_end")')
    for path in args.input or ():
        if not Path(path).exists():
            raise UserError(f"--input {path}: no such file or directory")
    out = Path(args.output)
    records = out / "records"
    if fresh_records and records.exists() and any(records.iterdir()) and not args.append:
        if not getattr(args, "fresh", False):
            raise UserError(f"{out} holds the records of an earlier run ({records}); pass "
                            "--append to add to them, --fresh to delete them first, or choose "
                            "another --output")
        import shutil
        shutil.rmtree(records)
        print(f"[upm] --fresh: deleted the records of an earlier run in {records} "
              "(the store's snapshots and registry are kept)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    expected = None
    if external:
        inputs = tuple(args.input or ())
    else:
        spec = dataclasses.replace(DEMO_SCENARIO, tenants=args.tenants,
                                   windows_per_tenant=args.windows_per_tenant)
        lines, expected = generate(spec)
        gen = out / "input" / "generated.jsonl"
        gen.parent.mkdir(parents=True, exist_ok=True)
        gen.write_text("\n".join(lines) + "\n")
        inputs = (str(gen),)
        print(f"[upm] embedded generator: {spec.tenants} tenants x {spec.windows_per_tenant} "
              f"windows, {len(lines)} messages (duplicates, out-of-order, late, unlabeled, "
              f"malformed; concept change for {expected.drift_tenant!r}) -> {gen}", flush=True)
    opts = JobOptions(inputs=inputs, output_dir=str(out), config=cfg, parallelism=args.parallelism,
                      shadow_deltas=args.shadow_deltas, follow=args.follow,
                      policy_path=getattr(args, "policy", None),
                      warm_start=not args.no_warm_start,
                      kafka_bootstrap=args.kafka_bootstrap,
                      kafka_topics=tuple(args.kafka_topic or ()), kafka_group=args.kafka_group,
                      kafka_bounded=args.kafka_bounded,
                      kafka_output_prefix=args.kafka_output_prefix,
                      rest_port=getattr(args, "rest_port", None) or 0,
                      state_backend=args.state_backend,
                      flink_conf=flink_conf(getattr(args, "flink_conf", None) or ()))
    return opts, expected


STATE_BACKENDS = ("hashmap", "rocksdb")


def flink_conf(items) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--flink-conf {item!r} must look like KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def add_job_arguments(r: argparse.ArgumentParser, output_help: str = "./upm-data") -> None:
    r.add_argument("--input", action="append", help="JSON-lines file or directory (repeatable)")
    r.add_argument("--output", default="./upm-data",
                   help=f"store and records (default {output_help})")
    r.add_argument("--config", help="TOML config file")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a knob")
    r.add_argument("--policy", help="promotion policy TOML (automatic rollback on quarantine)")
    r.add_argument("--parallelism", type=int, default=1)
    r.add_argument("--shadow-deltas", action="store_true", help="write ShadowDelta records")
    r.add_argument("--state-backend", choices=STATE_BACKENDS,
                   help="where Flink keeps keyed state: rocksdb (local disk, incremental "
                   "checkpoints) or hashmap (the JVM heap). Default: upm run rocksdb; upm "
                   "submit/resume the cluster's (upm flink up: rocksdb)")
    r.add_argument("--follow", action="store_true", help="watch input directories for new files")
    r.add_argument("--append", action="store_true", help="keep records of earlier runs")
    r.add_argument("--fresh", action="store_true",
                   help="delete the records of an earlier run in --output first")
    r.add_argument("--no-warm-start", action="store_true",
                   help="start every tenant from scratch, ignoring snapshots in the store")
    k = r.add_argument_group("kafka")
    k.add_argument("--kafka-bootstrap", help="bootstrap servers, e.g. 127.0.0.1:9092")
    k.add_argument("--kafka-topic", action="append", help="input topic (repeatable)")
    k.add_argument("--kafka-group", default="upm-stream", help="consumer group")
    k.add_argument("--kafka-bounded", action="store_true",
                   help="stop at the offsets that are latest when the job starts")
    k.add_argument("--kafka-output-prefix", help="also write records to topics PREFIX.<kind>")
    r.add_argument("--tenants", type=positive_int, default=4, help="generator: tenants")
    r.add_argument("--windows-per-tenant", type=positive_int, default=3000,
                   help="generator: windows each")
    add_knob_options(r)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v
