"""The `upm` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipelines.console import quiet_console

quiet_console()  # before anything below imports TensorFlow or a Google client

from runners.errors import Interrupted, UserError  # noqa: E402
from runners.job_flags import add_job_arguments, job_options  # noqa: E402
from runners.launch import count_lines, run_beam, run_flink, signals_interrupt  # noqa: E402
from state.config import ConfigError  # noqa: E402


def cmd_run(args) -> int:
    opts, expected = job_options(args)
    inputs = opts.inputs
    total = sum(count_lines(p) for p in inputs) if inputs and not args.follow else None
    from pipelines.summary import format_table, summarize

    try:
        with signals_interrupt():
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
    from runners.adapter_service import add_commands as add_adapter_commands
    add_adapter_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
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
