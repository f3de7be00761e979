"""Does parallelism add cores? The UPM job on a standalone cluster as `upm flink up
--taskmanagers 2` starts it (its default of one slot per TaskManager), submitted with `upm submit`
at parallelism 1 and 2, steady state, in one run.

    .venv-flink/bin/python bench/cluster_scaling.py [--tenants 32] [--windows-per-tenant 500]

Each job reads N and then k*N windows (k = --scale, distinct streams, so every window is trained)
and the rate is (k*N - N) / (duration(k*N) - duration(N)), the durations as the cluster's REST
API reports them (start of the job to FINISHED). Writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import write_results  # noqa: E402  (bench/, the script's directory)

from pipelines.ports import free_port  # noqa: E402
from runners import flink_cluster as fc  # noqa: E402
from pipelines.summary import summarize  # noqa: E402
from runners.embedded import DEMO_SCENARIO  # noqa: E402
from state.scenario import generate  # noqa: E402

HERE = Path(__file__).resolve().parent


def submit(spec: fc.ClusterSpec, store: Path, path: Path, parallelism: int) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "runners.cli", "submit", "--store", str(store), "--rest-port",
         str(spec.rest_port), "--input", str(path), "--parallelism", str(parallelism),
         "--name", f"bench-p{parallelism}-{path.stem}"],
        capture_output=True, text=True, cwd=HERE.parent, check=True).stdout
    return out.split("submitted job ")[1].split()[0]


def finished_seconds(spec: fc.ClusterSpec, job_id: str, timeout_s: float = 1800) -> float:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = fc.rest(spec, f"/jobs/{job_id}")
        if job["state"] == "FINISHED":
            return job["duration"] / 1000
        if job["state"] in ("FAILED", "CANCELED"):
            raise SystemExit(f"job {job_id} ended {job['state']}")
        time.sleep(1)
    raise SystemExit(f"job {job_id} did not finish in {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=32)
    ap.add_argument("--windows-per-tenant", type=int, default=2000)
    ap.add_argument("--scale", type=int, default=5)
    args = ap.parse_args()
    spec_n = dataclasses.replace(DEMO_SCENARIO, tenants=args.tenants,
                                 windows_per_tenant=args.windows_per_tenant, drift_tenant=None)
    spec_k = dataclasses.replace(spec_n, windows_per_tenant=args.windows_per_tenant * args.scale)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        files = {}
        for name, spec in (("n", spec_n), ("k", spec_k)):
            lines, _ = generate(spec)
            files[name] = root / f"{name}.jsonl"
            files[name].write_text("\n".join(lines) + "\n")
        sizes = {name: sum(1 for _ in f.open()) for name, f in files.items()}
        cluster = fc.ClusterSpec(store=str(root / "store"), rest_port=free_port(),
                                 rpc_port=free_port(), prometheus_ports=f"{free_port()}",
                                 taskmanagers=2)
        ov = fc.up(cluster)
        print(f"cluster: {ov['taskmanagers']} TaskManagers, {ov['slots-total']} slots")
        rates = {}
        try:
            for p in (1, 2):
                took = {}
                for name in ("n", "k"):
                    store = root / f"store-p{p}-{name}"
                    took[name] = finished_seconds(cluster, submit(cluster, store, files[name], p))
                    trained = summarize(store / "records")["totals"]["trained"]
                    if trained < sizes[name] // 2:
                        raise SystemExit(f"p={p}: {trained} of {sizes[name]} windows trained")
                rates[p] = (sizes["k"] - sizes["n"]) / (took["k"] - took["n"])
                print(f"p={p}: {sizes['n']} windows in {took['n']:.1f} s, {sizes['k']} in "
                      f"{took['k']:.1f} s: {rates[p]:.0f} windows/s steady")
        finally:
            fc.down(cluster)
    p1 = f"upm flink cluster (2 TaskManagers x 1 slot), {args.tenants} tenants, p=1"
    p2 = f"upm flink cluster (2 TaskManagers x 1 slot), {args.tenants} tenants, p=2"
    result = {"rows": {p1: {"windows_per_s": rates[1], "vs": None, "ratio": None},
                       p2: {"windows_per_s": rates[2], "vs": p1, "ratio": rates[2] / rates[1]}}}
    print(f"p=2 / p=1: {rates[2] / rates[1]:.2f}x")
    write_results("cluster", result)


if __name__ == "__main__":
    main()
