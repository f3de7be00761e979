"""Run one Flink job on a fresh embedded mini-cluster and print its timings as JSON (one line).

    python bench/flink_run.py {identity|upm} FILE OUTPUT_DIR [--parallelism P]

`seconds` is env.execute from submission to the end of the job (mini-cluster start-up is before
it, TaskManager/Python start-up inside it); the benchmark takes start-up out by running N and
k·N windows and dividing the differences.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    t = time.perf_counter()
    env.execute(f"bench-{args.job}")
    print(json.dumps({"job": args.job, "seconds": time.perf_counter() - t}), flush=True)


if __name__ == "__main__":
    main()
