"""Run one Flink job on a fresh embedded mini-cluster and print its timings as JSON (one line).

    python bench/flink_run.py {identity|upm} FILE OUTPUT_DIR [--parallelism P]

`seconds` is env.execute from submission to the end of the job (mini-cluster start-up is before
it, TaskManager/Python start-up inside it); the benchmark takes start-up out by running N and
k·N windows and dividing the differences. `peak_rss_mib` is the largest resident size of the
mini-cluster JVM seen (sampled every 0.2 s), `jvm_cpu_s` the CPU seconds it used during the job: JobManager, TaskManager and, in thread mode, the
Python of every operator and its state live in that one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("job", choices=("identity", "upm"))
    ap.add_argument("file")
    ap.add_argument("output_dir")
    ap.add_argument("--parallelism", type=int, default=1)
    args = ap.parse_args()
    from pipelines import flink_job
    from pipelines.options import JobOptions
    from runners.embedded import demo_config

    opts = JobOptions(inputs=(args.file,), output_dir=args.output_dir, config=demo_config(),
                      parallelism=args.parallelism)
    env, _ = flink_job.environment(opts)
    if args.job == "identity":
        sys.path.insert(0, str(Path(__file__).parent))
        env.add_python_file(str(Path(__file__).with_name("identity_job.py")))  # for the worker
        import identity_job
        identity_job.build(env, [str(Path(args.file).resolve())])
    else:
        flink_job.build(env, opts)
    peak = [0]
    done = threading.Event()

    def sample():
        from runners.processes import java_children
        while not done.wait(0.2):
            for pid in java_children(os.getpid()):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                kb = int(status.split("VmRSS:")[1].split()[0])
                peak[0] = max(peak[0], kb)

    threading.Thread(target=sample, daemon=True).start()
    cpu0 = jvm_cpu_seconds()
    t = time.perf_counter()
    env.execute(f"bench-{args.job}")
    seconds = time.perf_counter() - t
    cpu = jvm_cpu_seconds() - cpu0
    done.set()
    print(json.dumps({"job": args.job, "seconds": seconds, "jvm_cpu_s": cpu,
                      "peak_rss_mib": peak[0] / 1024}), flush=True)


def jvm_cpu_seconds() -> float:
    """User + system CPU seconds the mini-cluster JVM(s) used so far: steadier than wall time
    on a shared machine, and it counts the Python of every operator (thread mode)."""
    from runners.processes import java_children
    ticks = 0
    for pid in java_children(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
