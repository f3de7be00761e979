"""`upm backfill`: train tenants over historical files (the batch Beam pipeline; beam runtime)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from runners.job_flags import add_knob_options, config_from_args
from state.config import UpmConfig
from state.records import rfc3339_to_ms


def parse_time(text: str) -> int:
    """RFC 3339 (with a UTC offset) or epoch milliseconds."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        return rfc3339_to_ms(t)
    except ValueError as e:
        raise SystemExit(f"upm backfill: bad time {text!r}: {e} "
                         "(use RFC 3339 such as 2026-11-22T00:00:00Z, or epoch ms)") from None


def cmd_backfill(args) -> int:
    try:
        from pipelines import backfill_job
    except ImportError as e:
        print(f"upm backfill runs on the beam runtime (.venv-beam/bin/upm backfill ...): {e}",
              file=sys.stderr)
        return 2
    opts = backfill_job.BackfillOptions(
        inputs=tuple(args.input), start_ms=parse_time(args.from_),
        end_ms=parse_time(args.to) if args.to else None, output_dir=args.output,
        config=config_from_args(args, UpmConfig()), input_format=args.format,
        warm_start=not args.no_warm_start, beam_args=tuple(args.beam_arg or ()))
    print(f"[backfill] {', '.join(opts.inputs)} -> {opts.store_root} (windows ending in "
          f"[{args.from_}, {args.to or 'end'}))", flush=True)
    try:
        result = backfill_job.run(opts)
    except (FileNotFoundError, ValueError) as e:
        print(f"upm backfill: {e}", file=sys.stderr)
        return 2
    print(f"[backfill] {result.files} {result.input_format} file(s) in {result.seconds:.1f}s")
    print(backfill_job.format_table(result))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(dataclasses.asdict(result), indent=2))
    ok = backfill_job.balanced(result.totals) and all(
        backfill_job.balanced(c) for c in result.tenants.values())
    if not ok:
        print("[backfill] WARNING: the counts do not add up (see 'ok')", file=sys.stderr)
    records = Path(opts.output_dir) / "records"
    print(f"[backfill] snapshots in {opts.store_root}, records in {records}")
    refused = sorted(t for t, c in result.tenants.items() if c.get("refused"))
    if refused:
        print(f"upm backfill: refused tenant(s) {', '.join(refused)}: the store already has "
              f"snapshots this range cannot continue (reasons in {records / 'refusals'})",
              file=sys.stderr)
        return 2
    return 0 if ok else 1


def add_commands(sub) -> None:

    b = sub.add_parser("backfill", help="train over historical files (batch Beam pipeline)",
                       description="Read JSON lines, Parquet or TFRecord (tf.Example) files "
                       "through tfx-bsl TFXIO and train each tenant on its windows ending in "
                       "[--from, --to), writing snapshots (mode backfill) and registering them.")
    b.add_argument("--input", action="append", required=True,
                   help="file or glob pattern, local or gs:// or s3:// (repeatable)")
    b.add_argument("--from", dest="from_", required=True, metavar="TIME",
                   help="first window_end to train (RFC 3339 or epoch ms)")
    b.add_argument("--to", metavar="TIME", help="window_end before which to stop (default: all)")
    b.add_argument("--format", default="auto", choices=("auto", "jsonl", "parquet", "tfrecord"),
                   help="input format (auto: by file suffix)")
    b.add_argument("--output", default="./upm-data", help="store and records (default ./upm-data)")
    b.add_argument("--config", help="TOML config file")
    b.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a knob")
    b.add_argument("--no-warm-start", action="store_true",
                   help="do not continue tenants from their newest snapshot")
    b.add_argument("--summary-json", help="also write the counts as JSON here")
    b.add_argument("--beam-arg", action="append", metavar="--OPTION=VALUE",
                   help="a Beam pipeline option, e.g. --beam-arg=--runner=DataflowRunner")
    add_knob_options(b)
    b.set_defaults(func=cmd_backfill)
