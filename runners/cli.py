"""The `upm` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from runners.errors import Interrupted, UserError, root_cause
from runners.processes import stop_jvm_children
from state.config import SECTIONS, ConfigError, UpmConfig


def _add_knob_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("knobs (each also a --config TOML key; see DESIGN §4)")
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            g.add_argument(f"--{section}.{f.name}", dest=f"knob:{section}.{f.name}", metavar="V",
                           help=f"default {f.default!r}")


def _config_from_args(args, base: UpmConfig) -> UpmConfig:
    cfg = base
    if args.config:
        import tomllib
        try:
            with open(args.config, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read --config {args.config}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{args.config}: {e}") from None
        cfg = UpmConfig.from_dict(doc, cfg)
    for item in args.set or []:
        cfg = cfg.with_override(item)
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
    cfg = _config_from_args(args, UpmConfig() if external else demo_config())
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
                      flink_conf=_flink_conf(getattr(args, "flink_conf", None) or ()))
    return opts, expected


def _flink_conf(items) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--flink-conf {item!r} must look like KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def cmd_run(args) -> int:
    opts, expected = job_options(args)
    inputs = opts.inputs
    total = sum(_count_lines(p) for p in inputs) if inputs and not args.follow else None
    from pipelines.summary import format_table, summarize

    try:
        with _signals_interrupt():
            if args.engine == "beam":
                run_beam(opts, args.pubsub_subscription, args.pubsub_output_prefix,
                         args.run_seconds)
            else:
                run_flink(opts, total, quiet=args.quiet)
    except Interrupted as e:
        print(f"[upm] stopped by signal {e.signum}; partial summary of the records committed so "
              "far (windows in flight are not in it):", flush=True)
        print(format_table(summarize(opts.records_dir)), flush=True)
        if args.engine == "flink":
            # PyFlink's exit hooks would call the JVM that is gone (tracebacks, delays)
            sys.stderr.flush()
            os._exit(e.exit_code)
        return e.exit_code
    summary = summarize(opts.records_dir)
    if expected is not None:
        summary["expected"] = expected.to_dict()
    print(format_table(summary))
    refused = summary["totals"]["snapshots_refused"]
    if refused:
        print(f"[upm] WARNING: {refused} snapshot(s) refused: the store already holds those "
              f"versions with different bytes (reasons in {opts.records_dir / 'refusals'})",
              file=sys.stderr)
    # A bounded input ends with every window accounted for; an unbounded run stopped midway
    # still holds windows in flight, so its table is a snapshot, not a balance.
    bounded = not (args.follow or args.pubsub_subscription
                   or (args.kafka_topic and not args.kafka_bounded))
    if bounded and not summary["totals"]["balanced"]:
        print("[upm] WARNING: the counts do not add up (see 'ok' column)", file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2))
    print(f"[upm] snapshots in {opts.store_root}, records in {opts.records_dir}")
    return 0 if summary["totals"]["balanced"] or not bounded else 1


def _count_lines(path: str) -> int:
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def run_beam(opts, pubsub_subscription: str | None = None,
             pubsub_output_prefix: str | None = None, run_seconds: float | None = None) -> None:
    """Run the Beam pipeline locally (BundleBasedDirectRunner, streaming, TestStream replay)."""
    try:
        from pipelines import beam_job
    except ImportError as e:
        raise SystemExit(f"upm run --engine beam needs the beam runtime (.venv-beam/bin/upm): {e}")
    if opts.uses_kafka or opts.follow:
        raise SystemExit("upm run --engine beam reads files or Pub/Sub (Kafka and --follow "
                         "are the Flink job's)")
    if pubsub_subscription:
        print(f"[upm] Beam BundleBasedDirectRunner (streaming) reading {pubsub_subscription}",
              flush=True)
        beam_job.run_pubsub(opts, pubsub_subscription, pubsub_output_prefix, run_seconds)
        return
    lines = beam_job.read_lines(opts.inputs)
    print(f"[upm] Beam BundleBasedDirectRunner (streaming): replaying {len(lines)} messages",
          flush=True)
    start = time.time()
    beam_job.run(opts, lines)
    print(f"[upm] pipeline finished in {time.time() - start:.1f}s", flush=True)


def run_flink(opts, total_messages: int | None, quiet: bool = False) -> None:
    """Run the Flink job on the embedded mini-cluster, printing progress from its REST API."""
    from pipelines import flink_job, flink_progress
    from pipelines.ports import free_port

    opts = dataclasses.replace(opts, rest_port=opts.rest_port or free_port())
    env, _ = flink_job.environment(opts)
    flink_job.build(env, opts)
    base = f"http://127.0.0.1:{opts.rest_port}"
    print(f"[upm] Flink mini-cluster: web UI {base}/ (parallelism {opts.parallelism})", flush=True)
    error: list[BaseException] = []

    def execute():
        try:
            env.execute(opts.job_name)
        except BaseException as e:  # reported below, on the main thread
            error.append(e)

    t = threading.Thread(target=execute, name="flink-execute", daemon=True)
    start = time.time()
    t.start()
    job_id = None
    try:
        _watch(t, base, total_messages, quiet, start, error)
    except Interrupted:
        print("[upm] interrupted: cancelling the job and stopping the mini-cluster", flush=True)
        job_id = flink_progress.running_job_id(base)
        if job_id:
            flink_progress.cancel(base, job_id)
        t.join(timeout=30)
        import logging
        logging.disable(logging.CRITICAL)  # py4j would log every call to the gateway it loses
        stop_jvm_children()
        raise
    if error:
        log = Path(opts.output_dir) / "flink" / "log"
        raise UserError(f"the Flink job failed: {root_cause(error[0])} (Flink log: {log})",
                        exit_code=1)
    print(f"[upm] job finished in {time.time() - start:.1f}s", flush=True)


def _watch(t: threading.Thread, base: str, total_messages: int | None, quiet: bool,
           start: float, error: list) -> None:
    """Print progress every two seconds until the job thread ends."""
    from pipelines import flink_progress

    job_id = None
    while t.is_alive():
        t.join(timeout=2.0)
        if quiet or not t.is_alive():
            continue
        job_id = job_id or flink_progress.running_job_id(base)
        if not job_id:
            continue
        try:
            c = flink_progress.upm_counters(base, job_id)
        except Exception:
            continue
        done = c.get("messages_in", 0)
        pct = f" ({100.0 * done / total_messages:5.1f}%)" if total_messages else ""
        print(f"[upm] {time.time() - start:6.1f}s  messages {done}{pct}  trained "
              f"{c.get('trained', 0)}  duplicates {c.get('duplicates', 0)}  late "
              f"{c.get('late', 0)}  dead {c.get('dead_letters', 0)}  snapshots "
              f"{c.get('snapshots_written', 0)}  quarantines {c.get('quarantines', 0)}", flush=True)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGINT and SIGTERM raise Interrupted on the main thread while the job runs; a second
    signal during the clean-up ends the process at once (the JVM is killed first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"seen": False}

    def handler(signum, frame):
        if state["seen"]:
            stop_jvm_children(timeout_s=0)
            os._exit(128 + signum)
        state["seen"] = True
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def add_job_arguments(r: argparse.ArgumentParser, output_help: str = "./upm-data") -> None:
    r.add_argument("--input", action="append", help="JSON-lines file or directory (repeatable)")
    r.add_argument("--output", default="./upm-data",
                   help=f"store and records (default {output_help})")
    r.add_argument("--config", help="TOML config file")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a knob")
    r.add_argument("--policy", help="promotion policy TOML (automatic rollback on quarantine)")
    r.add_argument("--parallelism", type=int, default=1)
    r.add_argument("--shadow-deltas", action="store_true", help="write ShadowDelta records")
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
    _add_knob_options(r)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="upm", description="UPM Stream: online training per tenant.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the streaming job (embedded generator by default)")
    r.add_argument("--engine", default="flink", choices=("flink", "beam"),
                   help="flink (the .venv-flink runtime) or beam (the .venv-beam runtime)")
    add_job_arguments(r)
    r.add_argument("--summary-json", help="also write the summary as JSON here")
    r.add_argument("--rest-port", type=int, default=0,
                   help="the mini-cluster's REST/web UI port (default: a free one)")
    r.add_argument("--flink-conf", action="append", metavar="KEY=VALUE",
                   help="extra Flink configuration for the mini-cluster (repeatable)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    ps = r.add_argument_group("pub/sub (--engine beam)")
    ps.add_argument("--pubsub-subscription", help="projects/P/subscriptions/S to read windows from")
    ps.add_argument("--pubsub-output-prefix", help="also publish records to topics PREFIX-<kind>")
    ps.add_argument("--run-seconds", type=float, help="stop an unbounded run after this long")
    r.set_defaults(func=cmd_run)
    from runners.governance_cli import add_commands
    add_commands(sub)
    from runners.flink_cli import add_commands as add_flink_commands
    add_flink_commands(sub)
    from runners.validate import add_commands as add_validate_commands
    add_validate_commands(sub)
    from runners.backfill_cli import add_commands as add_backfill_commands
    add_backfill_commands(sub)
    return p


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    debug = os.environ.get("UPM_DEBUG") == "1"
    try:
        return args.func(args)
    except ConfigError as e:
        _traceback(debug)
        print(f"upm: config error: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        _traceback(debug)
        print(f"upm {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # anything else is still one line; UPM_DEBUG=1 shows where
        _traceback(debug)
        first = (str(e).strip().splitlines() or [""])[0][:500]
        hint = "" if debug else " (UPM_DEBUG=1 for the traceback)"
        print(f"upm {args.command}: {type(e).__name__}: {first}{hint}", file=sys.stderr)
        return 1


def _traceback(debug: bool) -> None:
    if debug:
        import traceback
        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
