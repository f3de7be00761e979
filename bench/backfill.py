"""Throughput of `upm backfill` (the batch Beam pipeline on the FnApiRunner) per input format,
against the streaming path's engine-free core over the same windows, measured in the same run.

    .venv-beam/bin/python bench/backfill.py [--tenants 4] [--windows-per-tenant 10000]

Rows:
  streaming core      the baseline: the same messages through parse -> ReplayBuffer ->
                      TrainerState -> DriftWindow, one window at a time (pipelines/local_job.py)
  backfill <format>   the whole backfill pipeline, start to end (reading through tfx-bsl TFXIO,
                      window table, per-tenant grouping, training, publishing snapshots)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import backfill_job  # noqa: E402
from pipelines.local_job import run_local  # noqa: E402
from runners.embedded import DEMO_SCENARIO, demo_config  # noqa: E402
from state.scenario import generate  # noqa: E402
from tests.beam import history_files as hf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--windows-per-tenant", type=int, default=10000)
    args = ap.parse_args()
    spec = dataclasses.replace(DEMO_SCENARIO, tenants=args.tenants,
                               windows_per_tenant=args.windows_per_tenant)
    lines, _ = generate(spec)
    cfg = demo_config()
    run_local(lines[:2000], cfg)  # warm up TensorFlow tracing
    t = time.perf_counter()
    run_local(lines, cfg)
    rows = [("streaming core", time.perf_counter() - t, None)]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        windows = hf.windows_of(lines)
        hf.write_jsonl(root / "h.jsonl", lines)
        hf.write_parquet(root / "parquet", windows, files=4)
        hf.write_tfrecord(root / "tfrecord" / "h.tfrecord.gz", windows)
        for fmt, pattern in (("jsonl", root / "h.jsonl"), ("parquet", root / "parquet/*.parquet"),
                             ("tfrecord", root / "tfrecord/*.tfrecord.gz")):
            t = time.perf_counter()
            result = backfill_job.run(backfill_job.BackfillOptions(
                inputs=(str(pattern),), output_dir=str(root / f"out-{fmt}"), config=cfg))
            rows.append((f"backfill {fmt}", time.perf_counter() - t, result.totals["trained"]))
    n, base = len(lines), rows[0][1]
    print(f"{n} messages ({spec.tenants} tenants x {spec.windows_per_tenant} windows, "
          f"batch {cfg.trainer.batch_size}, snapshot every {cfg.trainer.snapshot_interval})")
    print(f"{'path':<20}{'seconds':>9}{'msgs/s':>10}{'speed-up':>10}")
    out = {}
    for name, secs, trained in rows:
        print(f"{name:<20}{secs:9.2f}{n / secs:10.0f}{base / secs:9.1f}x")
        out[name] = {"seconds": secs, "messages_per_s": n / secs, "speedup_vs_stream": base / secs,
                     "trained": trained}
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "backfill.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
