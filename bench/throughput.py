"""Throughput of the UPM job against baselines measured in the same run, as one table.

    .venv-flink/bin/python bench/throughput.py [--windows-per-tenant 3000] [--skip-flink]

Rows (windows/s; "ratio" is against the row named in "vs"):
  identity keyed PyFlink job  the cheapest keyed job a user could write on the same file
                              (bench/identity_job.py), steady state
  upm flink job p=1 / p=2     the whole UPM job on an embedded mini-cluster, steady state
  upm flink job, with start-up  N windows end to end, JVM and Python workers included
  river                       StandardScaler | LogisticRegression test-then-train, one thread
  vowpal wabbit               logistic loss test-then-train, one thread (where installed)
  core                        parse -> TenantPipeline (ReplayBuffer -> TrainerState with
                              TensorFlow -> DriftWindow), engine-free (pipelines/local_job.py)
  core, dense tenant          1 tenant, windows 10 ms apart (it holds ~500 windows and
                              remembers ~6,000 ids), against 4 tenants 1 s apart
  upm flink job, dense tenant the same dense stream through the Flink job, steady state
  upm flink job, 1000 tenants the same windows as the p=1 row, each tenant's windows dealt
                              round-robin to 250 sub-tenants (1,000 in all), steady state
  upm flink job, 10k tenants  10,000 tenants x 20 windows, end to end, against the 4-tenant
                              job end to end on as many windows; with the JVM's peak RSS and
                              the state bytes one tenant's parts hold (state/parts.py)

Steady state takes start-up out: each Flink job runs on N and on k*N windows (k = --scale) in
fresh mini-cluster processes, and the rate is (k*N - N) / (t(k*N) - t(N)).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import write_results  # noqa: E402  (bench/, the script's directory)

from pipelines.local_job import run_local  # noqa: E402
from runners.embedded import DEMO_SCENARIO, demo_config  # noqa: E402
from state.scenario import generate  # noqa: E402

HERE = Path(__file__).resolve().parent


def timed(fn, repeat=1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def flink_run(job: str, path: Path, out: Path, parallelism: int) -> dict:
    r = subprocess.run([sys.executable, str(HERE / "flink_run.py"), job, str(path), str(out),
                        "--parallelism", str(parallelism)], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if r.returncode:
        raise SystemExit(f"{job} job failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _count(path: Path) -> int:
    with path.open() as f:
        return sum(1 for _ in f)


def tenant_state_bytes(lines, cfg) -> float:
    """Mean bytes of the parts (keys and values) a tenant's pipeline holds after `lines`."""
    from state.tenant import TenantPipeline

    run = run_local(lines, cfg)
    sizes = [sum(len(k) + len(v) for k, v in TenantPipeline.parts(t.pipeline).items())
             for t in run.tenants.values()]
    return sum(sizes) / len(sizes)


def dealt(lines: list[str], ways: int) -> list[str]:
    """The same windows as `ways` times as many tenants: each tenant's windows (and feedback)
    dealt round-robin, in arrival order, to sub-tenants `<tenant>.<i>`. A feedback record goes
    where its window went; lines that do not parse stay as they are."""
    dealt_to: dict[tuple[str, str], str] = {}
    turn: dict[str, int] = {}
    out = []
    for line in lines:
        try:
            d = json.loads(line)
            tenant, wid = d["tenant_id"], d["window_id"]
        except (ValueError, KeyError, TypeError):
            out.append(line)
            continue
        if not isinstance(tenant, str) or not isinstance(wid, str):
            out.append(line)
            continue
        sub = dealt_to.get((tenant, wid))
        if sub is None:
            i = turn.get(tenant, 0)
            turn[tenant] = i + 1
            sub = dealt_to[(tenant, wid)] = f"{tenant}.{i % ways}"
        d["tenant_id"] = sub
        out.append(json.dumps(d))
    return out


def labeled_rows(lines):
    """(features, label) of each labeled window, in arrival order, for River and VW."""
    rows = []
    for line in lines:
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if not (isinstance(d, dict) and isinstance(d.get("features"), dict)
                and isinstance(d.get("label"), (int, float))):
            continue
        x = d["features"]
        if all(isinstance(v, (int, float)) and v == v and abs(v) < 1e300 for v in x.values()):
            rows.append((x, 1 if d["label"] > 0 else 0))
    return rows


def river_rate(rows) -> float | None:
    try:
        from river import linear_model, preprocessing
    except ImportError:
        return None
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    t = time.perf_counter()
    for x, y in rows:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return len(rows) / (time.perf_counter() - t)


def vw_rate(rows) -> float | None:
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return None
    vw = Workspace("--loss_function logistic --quiet")
    texts = [(f"{2 * y - 1} | " + " ".join(f"{k}:{v}" for k, v in x.items())) for x, y in rows]
    t = time.perf_counter()
    for text in texts:
        vw.predict(text)
        vw.learn(text)
    rate = len(texts) / (time.perf_counter() - t)
    vw.finish()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows-per-tenant", type=int, default=3000)
    ap.add_argument("--scale", type=int, default=5)
    ap.add_argument("--skip-flink", action="store_true")
    ap.add_argument("--many-tenants", type=int, default=10_000)
    args = ap.parse_args()
    cfg = demo_config()
    n_spec = dataclasses.replace(DEMO_SCENARIO, windows_per_tenant=args.windows_per_tenant)
    k_spec = dataclasses.replace(n_spec, windows_per_tenant=args.windows_per_tenant * args.scale)
    lines_n, _ = generate(n_spec)
    lines_k, _ = generate(k_spec)
    rows: list[tuple[str, float | None, str]] = []  # (name, windows/s, vs)

    run_local(lines_n[:2000], cfg)  # TensorFlow tracing
    core = len(lines_k) / timed(lambda: run_local(lines_k, cfg), repeat=3)  # a noisy machine
    dense = dataclasses.replace(n_spec, tenants=1, cadence_ms=10,
                                windows_per_tenant=len(lines_k) // 1, late_delay_ms=1800)
    lines_dense, _ = generate(dense)
    core_dense = len(lines_dense) / timed(lambda: run_local(lines_dense, cfg), repeat=3)
    labeled = labeled_rows(lines_k)
    river, vw = river_rate(labeled), vw_rate(labeled)

    many = dataclasses.replace(n_spec, tenants=args.many_tenants, windows_per_tenant=20,
                               drift_tenant=None)
    lines_many, _ = generate(many)
    state_bytes = tenant_state_bytes(lines_many, cfg)
    extra = {"state_bytes_per_tenant": state_bytes, "many_tenants": args.many_tenants}
    notes = [f"state per tenant, {args.many_tenants} tenants x 20 windows, at the end of the "
             f"input: {state_bytes:.0f} bytes of parts (keys + values)"]
    if not args.skip_flink:
        dense_n = dataclasses.replace(dense, windows_per_tenant=len(lines_n))
        lines_dense_n, _ = generate(dense_n)
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            files = {}
            ways = 1000 // n_spec.tenants
            for name, lines in (("n", lines_n), ("k", lines_k), ("dense-n", lines_dense_n),
                                ("dense-k", lines_dense), ("many", lines_many),
                                ("dealt-n", dealt(lines_n, ways)),
                                ("dealt-k", dealt(lines_k, ways))):
                files[name] = root / f"{name}.jsonl"
                files[name].write_text("\n".join(lines) + "\n")

            def steady(job, p, small="n", big="k"):
                rn = flink_run(job, files[small], root / f"{job}-{p}-{small}", p)
                rk = flink_run(job, files[big], root / f"{job}-{p}-{big}", p)
                extra = _count(files[big]) - _count(files[small])
                return extra / (rk["seconds"] - rn["seconds"]), rn, rk

            identity, _, _ = steady("identity", 1)
            upm1, upm1_n, upm1_k = steady("upm", 1)
            upm2, _, _ = steady("upm", 2)
            dense_rate, _, _ = steady("upm", 1, "dense-n", "dense-k")
            dealt_rate, _, _ = steady("upm", 1, "dealt-n", "dealt-k")
            many_run = flink_run("upm", files["many"], root / "many", 1)
        many_rate = len(lines_many) / many_run["seconds"]
        four_rate = len(lines_k) / upm1_k["seconds"]
        extra.update(peak_rss_mib_4_tenants=upm1_k["peak_rss_mib"],
                     peak_rss_mib_many_tenants=many_run["peak_rss_mib"])
        notes.append(f"TaskManager (mini-cluster JVM) peak RSS: 4 tenants "
                     f"{upm1_k['peak_rss_mib']:.0f} MiB, {args.many_tenants} tenants "
                     f"{many_run['peak_rss_mib']:.0f} MiB")
        rows += [("identity keyed PyFlink job, p=1", identity, ""),
                 ("upm flink job, p=1", upm1, "identity keyed PyFlink job, p=1"),
                 ("upm flink job, p=2", upm2, "identity keyed PyFlink job, p=1"),
                 (f"upm flink job, p=1, with start-up ({len(lines_n)} windows)",
                  len(lines_n) / upm1_n["seconds"], "upm flink job, p=1"),
                 ("upm flink job, 1 dense tenant (10 ms apart), p=1", dense_rate,
                  "upm flink job, p=1"),
                 (f"upm flink job, the same windows as {ways * n_spec.tenants} tenants, p=1",
                  dealt_rate, "upm flink job, p=1"),
                 (f"upm flink job, 4 tenants, with start-up ({len(lines_k)} windows)", four_rate,
                  ""),
                 (f"upm flink job, {args.many_tenants} tenants x 20, with start-up", many_rate,
                  f"upm flink job, 4 tenants, with start-up ({len(lines_k)} windows)")]
    rows += [("river StandardScaler|LogisticRegression", river, ""),
             ("vowpal wabbit (logistic)", vw, "river StandardScaler|LogisticRegression"),
             ("core (parse -> TenantPipeline, TensorFlow)", core,
              "river StandardScaler|LogisticRegression"),
             ("core, 1 dense tenant (10 ms apart)", core_dense,
              "core (parse -> TenantPipeline, TensorFlow)")]
    rates = {name: rate for name, rate, _ in rows}
    print(f"{len(lines_n)} and {len(lines_k)} messages ({n_spec.tenants} tenants, 1 s apart, "
          f"batch {cfg.trainer.batch_size}, {cfg.trainer.steps_per_call} steps per TensorFlow "
          f"call); {os.cpu_count()} cores")
    print(f"{'row':<58}{'windows/s':>11}  ratio")
    result = {}
    for name, rate, vs in rows:
        ratio = f"{rate / rates[vs]:.2f}x {vs}" if rate and vs and rates.get(vs) else ""
        shown = f"{rate:11.0f}" if rate else f"{'n/a':>11}"
        print(f"{name:<58}{shown}  {ratio}")
        result[name] = {"windows_per_s": rate, "vs": vs or None,
                        "ratio": rate / rates[vs] if rate and vs and rates.get(vs) else None}
    for note in notes:
        print(note)
    write_results("throughput", {"rows": result, "notes": notes, **extra})


if __name__ == "__main__":
    main()
