"""Throughput of `upm backfill` (the batch Beam pipeline on the FnApiRunner) per input format,
against the streaming path's engine-free core over the same windows, measured in the same run.

    .venv-beam/bin/python bench/backfill.py [--tenants 4] [--windows-per-tenant 10000]

Rows:
  streaming core      the baseline: the same messages through parse -> ReplayBuffer ->
                      TrainerState -> DriftWindow, one window at a time (pipelines/local_job.py)
  backfill <format>   the whole backfill pipeline, start to end (reading through tfx-bsl TFXIO,
                      window table, per-tenant grouping, training, publishing snapshots)
  backfill parquet, steady state
                      start-up taken out: (k*N - N) / (t(k*N) - t(N)), k = --scale, the
                      k*N run on its own files and store
  beam streaming job, steady state
                      `upm run --engine beam` (the streaming Beam job on the local
                      BundleBasedDirectRunner, as the tests run it) on N and 5*N messages of the
                      demo scenario, each in a fresh process: (5N - N) / (t(5N) - t(N))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import write_results  # noqa: E402  (bench/, the script's directory)

from pipelines import backfill_job  # noqa: E402
from pipelines.local_job import run_local  # noqa: E402
from runners.embedded import DEMO_PROFILE, DEMO_SCENARIO, demo_config, profile_toml  # noqa: E402
from state.scenario import generate  # noqa: E402
from tests.beam import history_files as hf  # noqa: E402


def beam_streaming(root: Path, spec, windows_per_tenant: int):
    """The streaming Beam job's steady state: (name, seconds, trained, messages)."""
    (root / "upm.toml").write_text(profile_toml(DEMO_PROFILE))
    took, trained, sizes = [], [], []
    for n in (windows_per_tenant, 5 * windows_per_tenant):
        lines, _ = generate(dataclasses.replace(spec, windows_per_tenant=n))
        src = root / f"beam-{n}.jsonl"
        src.write_text("\n".join(lines) + "\n")
        out = root / f"beam-out-{n}"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runners.cli", "run", "--engine", "beam",
                        "--input", str(src), "--config", str(root / "upm.toml"), "--output",
                        str(out), "--quiet", "--summary-json", str(out / "s.json")],
                       check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        took.append(time.perf_counter() - t)
        trained.append(json.loads((out / "s.json").read_text())["totals"]["trained"])
        sizes.append(len(lines))
    return ("beam streaming job, steady state", took[1] - took[0], trained[1] - trained[0],
            sizes[1] - sizes[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--windows-per-tenant", type=int, default=10000)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--beam-windows-per-tenant", type=int, default=1000)
    args = ap.parse_args()
    spec = dataclasses.replace(DEMO_SCENARIO, tenants=args.tenants,
                               windows_per_tenant=args.windows_per_tenant)
    lines, _ = generate(spec)
    cfg = demo_config()
    run_local(lines[:2000], cfg)  # warm up TensorFlow tracing
    t = time.perf_counter()
    run_local(lines, cfg)
    rows = [("streaming core", time.perf_counter() - t, None, len(lines))]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        windows = hf.windows_of(lines)
        hf.write_jsonl(root / "h.jsonl", lines)
        hf.write_parquet(root / "parquet", windows, files=4)
        hf.write_tfrecord(root / "tfrecord" / "h.tfrecord.gz", windows)
        def backfill(fmt, pattern, name):
            t = time.perf_counter()
            result = backfill_job.run(backfill_job.BackfillOptions(
                inputs=(str(pattern),), output_dir=str(root / f"out-{name}"), config=cfg))
            return time.perf_counter() - t, result.totals["trained"]

        for fmt, pattern in (("jsonl", root / "h.jsonl"), ("parquet", root / "parquet/*.parquet"),
                             ("tfrecord", root / "tfrecord/*.tfrecord.gz")):
            rows.append((f"backfill {fmt}", *backfill(fmt, pattern, fmt), len(lines)))
        big, _ = generate(dataclasses.replace(spec, windows_per_tenant=args.windows_per_tenant
                                              * args.scale))
        hf.write_parquet(root / "parquet-k", hf.windows_of(big), files=4)
        secs_k, trained_k = backfill("parquet", root / "parquet-k/*.parquet", "parquet-k")
        secs_n = rows[2][1]
        rows.append(("backfill parquet, steady state", secs_k - secs_n, trained_k,
                     len(big) - len(lines)))
        rows.append(beam_streaming(root, spec, args.beam_windows_per_tenant))
    base = len(lines) / rows[0][1]
    print(f"{len(lines)} messages ({spec.tenants} tenants x {spec.windows_per_tenant} windows, "
          f"batch {cfg.trainer.batch_size}, snapshot every {cfg.trainer.snapshot_interval}); "
          f"steady state from {len(lines)} and {len(big)} messages")
    print(f"{'path':<32}{'seconds':>9}{'msgs/s':>10}{'vs core':>9}")
    out = {}
    for name, secs, trained, n in rows:
        rate = n / secs
        print(f"{name:<32}{secs:9.2f}{rate:10.0f}{rate / base:8.1f}x")
        out[name] = {"seconds": secs, "messages": n, "messages_per_s": rate,
                     "vs_streaming_core": rate / base, "trained": trained}
    write_results("backfill", {"rows": out})


if __name__ == "__main__":
    main()
