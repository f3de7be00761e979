"""Throughput of the UPM job: the engine-free core alone and the whole Flink job, on the
built-in generator, with ratios against a baseline measured in the same run.

    .venv-flink/bin/python bench/throughput.py [--tenants 4] [--windows-per-tenant 3000]

Baseline: parsing the same messages (JSON -> records) and nothing else. Rows:
  parse only          the baseline
  core, no training   parse + ReplayBuffer (ordering, dedup, lateness)
  core                parse + ReplayBuffer + TrainerState (TensorFlow steps) + DriftWindow
  backfill core       the same messages as a backfill trains them, engine-free: parse into a
                      window table, per tenant order/dedupe/join (Arrow), columnar hashing,
                      runs of full micro-batches in one TensorFlow call (state/backfill.py)
  flink job           the Flink job on an embedded mini-cluster, parallelism 1, end to end
                      (including JVM and Python worker start-up, and the same from first to
                      last record where the mini-cluster's REST API tells it)
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

from pipelines.local_job import run_local  # noqa: E402
from runners.embedded import DEMO_SCENARIO, demo_config  # noqa: E402
from state.parse import parse_message  # noqa: E402
from state.replay import ReplayBuffer  # noqa: E402
from state.scenario import generate  # noqa: E402


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def parse_only(lines):
    for line in lines:
        parse_message(line)


def replay_only(lines):
    bufs = {}
    for line in lines:
        p = parse_message(line)
        if p.ok and hasattr(p.record, "window_start"):
            rb = bufs.setdefault(p.record.tenant_id, ReplayBuffer(p.record.tenant_id))
            rb.add(p.record)
    for rb in bufs.values():
        rb.flush()


def backfill_core(lines, cfg):
    import pyarrow as pa
    import pyarrow.compute as pc

    from state import backfill
    from state.trainer import TrainerState
    from state.window_table import from_json_lines

    table = pa.Table.from_batches([from_json_lines(lines)])
    table = table.filter(pc.is_null(table.column("error")))
    for tenant in pc.unique(table.column("tenant_id")).to_pylist():
        c = cfg.for_tenant(tenant)
        prepared = backfill.prepare(tenant, table.filter(pc.equal(table.column("tenant_id"), tenant)),
                                    None, None)
        for _ in backfill.train(prepared, TrainerState(tenant, c.model, c.trainer)):
            pass


def learner_steps(jit: str, batch: int, steps: int = 300) -> float:
    """Seconds per Adam step of the linear model on one micro-batch."""
    import numpy as np

    from model.network import ModelConfig, init_params, init_slots, learner_for

    cfg = ModelConfig(jit=jit)
    learner = learner_for(cfg)
    params = init_params(cfg)
    slots = init_slots(params)
    x = np.random.default_rng(0).normal(size=(batch, cfg.input_width)).astype("float32")
    y = np.zeros(batch, "float32")
    for i in range(20):
        params, slots, _, _ = learner.update(params, slots, i, x, y, 0.01)
    t = time.perf_counter()
    for i in range(steps):
        params, slots, _, _ = learner.update(params, slots, i, x, y, 0.01)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--windows-per-tenant", type=int, default=3000)
    ap.add_argument("--skip-flink", action="store_true")
    args = ap.parse_args()
    spec = dataclasses.replace(DEMO_SCENARIO, tenants=args.tenants,
                               windows_per_tenant=args.windows_per_tenant)
    lines, expected = generate(spec)
    n = len(lines)
    cfg = demo_config()
    run_local(lines[:2000], cfg)  # warm up TensorFlow tracing
    rows = [("parse only", timed(lambda: parse_only(lines), 3)),
            ("core, no training", timed(lambda: replay_only(lines), 3)),
            ("core", timed(lambda: run_local(lines, cfg), 2)),
            ("backfill core", timed(lambda: backfill_core(lines, cfg), 2))]
    if not args.skip_flink:
        from pipelines.options import JobOptions
        from runners.cli import run_flink

        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "in.jsonl"
            f.write_text("\n".join(lines) + "\n")
            opts = JobOptions(inputs=(str(f),), output_dir=d, config=cfg, parallelism=1)
            t = time.perf_counter()
            run_flink(opts, n, quiet=True)
            rows.append(("flink job (incl. start-up)", time.perf_counter() - t))
    base = rows[0][1]
    print(f"{n} messages ({spec.tenants} tenants x {spec.windows_per_tenant} windows, "
          f"batch {cfg.trainer.batch_size})")
    print(f"{'stage':<28}{'seconds':>9}{'msgs/s':>10}{'vs parse':>10}")
    result = {}
    for name, secs in rows:
        print(f"{name:<28}{secs:9.2f}{n / secs:10.0f}{secs / base:9.1f}x")
        result[name] = {"seconds": secs, "messages_per_s": n / secs, "ratio_vs_parse": secs / base}
    print("\nTensorFlow update step (linear head, width 256), microseconds per step:")
    print(f"{'batch':>6}{'XLA off':>10}{'XLA on':>10}{'on/off':>8}")
    for batch in (8, 32, 256):
        off, on = learner_steps("off", batch), learner_steps("on", batch)
        print(f"{batch:6d}{off * 1e6:10.0f}{on * 1e6:10.0f}{on / off:8.2f}")
        result[f"step_batch{batch}"] = {"xla_off_us": off * 1e6, "xla_on_us": on * 1e6}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "throughput.json").write_text(json.dumps({"messages": n, "rows": result}, indent=2))


if __name__ == "__main__":
    main()
