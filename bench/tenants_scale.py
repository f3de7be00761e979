"""100,000 tenants on one TaskManager: `upm run --tenants 100000 --windows-per-tenant 4` (the
default config, the embedded mini-cluster) with the hashmap and the RocksDB state backend,
against the same number of windows as 4 tenants, in one run.

    .venv-flink/bin/python bench/tenants_scale.py [--tenants 100000] [--windows-per-tenant 4]

Per run: windows/s from start to end (start-up included, as a user times `upm run`), the peak
RSS summed over the whole process tree (the CLI, the mini-cluster JVM and the Python embedded
in it), sampled every 0.5 s, and from the REST API the largest completed checkpoint (size,
duration); state bytes per tenant is that checkpoint's size over the tenants it held. Writes
bench/results/tenants.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import write_results  # noqa: E402  (bench/, the script's directory)

from pipelines.ports import free_port  # noqa: E402

HERE = Path(__file__).resolve().parent


def tree_rss_kib(root: int) -> int:
    """Resident KiB of `root` and every process below it (processes, not threads)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, ppid = int(proc.name), int(fields["PPid"])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def largest_checkpoint(port: int, seen: dict) -> None:
    """Keep in `seen` the largest completed checkpoint the job reported so far."""
    try:
        jobs = _get(port, "/jobs/overview")["jobs"]
        for job in jobs:
            latest = _get(port, f"/jobs/{job['jid']}/checkpoints")["latest"]["completed"]
            if latest and latest["state_size"] >= seen.get("state_size", -1):
                seen.update(state_size=latest["state_size"],
                            duration_ms=latest["end_to_end_duration"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not up yet, or already gone


def run(tenants: int, windows: int, backend: str, workdir: Path) -> dict:
    out = workdir / f"{tenants}-{backend}"
    port = free_port()
    cmd = [sys.executable, "-m", "runners.cli", "run", "--output", str(out), "--quiet",
           "--tenants", str(tenants), "--windows-per-tenant", str(windows),
           "--state-backend", backend, "--rest-port", str(port),
           "--summary-json", str(out / "summary.json")]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak, checkpoint, done = [0], {}, threading.Event()

    def sample():
        while not done.wait(0.5):
            peak[0] = max(peak[0], tree_rss_kib(proc.pid))
            largest_checkpoint(port, checkpoint)

    threading.Thread(target=sample, daemon=True).start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t
    done.set()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    totals = json.loads((out / "summary.json").read_text())["totals"]
    assert totals["balanced"], totals
    size = checkpoint.get("state_size")
    return {"tenants": tenants, "backend": backend, "seconds": seconds,
            "windows_in": totals["windows_in"], "windows_per_s": totals["windows_in"] / seconds,
            "peak_rss_mib": peak[0] / 1024, "checkpoint_bytes": size,
            "checkpoint_ms": checkpoint.get("duration_ms"),
            "state_bytes_per_tenant": size / tenants if size else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=100_000)
    ap.add_argument("--windows-per-tenant", type=int, default=4)
    args = ap.parse_args()
    total = args.tenants * args.windows_per_tenant
    with tempfile.TemporaryDirectory(prefix="upm-bench-tenants-") as tmp:
        work = Path(tmp)
        few = run(4, total // 4, "rocksdb", work)  # the default config
        print(json.dumps(few), flush=True)
        many = {}
        for backend in ("hashmap", "rocksdb"):
            many[backend] = run(args.tenants, args.windows_per_tenant, backend, work)
            print(json.dumps(many[backend]), flush=True)
    rows = {f"upm run, 4 tenants x {total // 4}, rocksdb, with start-up": {
        **few, "ratio": None, "vs": None}}
    base = next(iter(rows))
    for backend, r in many.items():
        rows[f"upm run, {args.tenants} tenants x {args.windows_per_tenant}, {backend}, "
             "with start-up"] = {**r, "ratio": r["windows_per_s"] / few["windows_per_s"],
                                 "vs": base}
    write_results("tenants", {"rows": rows})
    for name, r in rows.items():
        ratio = f"  {r['ratio']:.2f}x" if r["ratio"] else ""
        print(f"{name}: {r['windows_per_s']:,.0f} windows/s{ratio}, peak RSS "
              f"{r['peak_rss_mib']:,.0f} MiB, checkpoint {r['checkpoint_bytes']} bytes in "
              f"{r['checkpoint_ms']} ms")


if __name__ == "__main__":
    main()
