"""Launching a job and watching it: the Beam pipeline on the local runner, the Flink job on the
embedded mini-cluster (progress from its REST API), counting the input, and turning SIGINT and
SIGTERM into a clean stop."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

from runners import flink_progress
from runners.errors import Interrupted, UserError, root_cause
from runners.processes import stop_jvm_children


def count_lines(path: str) -> int:
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def run_beam(opts, pubsub_subscription: str | None = None,
             pubsub_output_prefix: str | None = None, run_seconds: float | None = None) -> None:
    """Run the Beam pipeline locally (BundleBasedDirectRunner, streaming, TestStream replay)."""
    try:
        from pipelines import beam_job
    except ImportError as e:
        raise SystemExit(f"upm run --engine beam needs the beam runtime (.venv-beam/bin/upm): {e}")
    if opts.uses_kafka or opts.follow:
        raise SystemExit("upm run --engine beam reads files or Pub/Sub (Kafka and --follow "
                         "are the Flink job's)")
    if pubsub_subscription:
        print(f"[upm] Beam BundleBasedDirectRunner (streaming) reading {pubsub_subscription}",
              flush=True)
        beam_job.run_pubsub(opts, pubsub_subscription, pubsub_output_prefix, run_seconds)
        return
    lines = beam_job.read_lines(opts.inputs)
    print(f"[upm] Beam BundleBasedDirectRunner (streaming): replaying {len(lines)} messages",
          flush=True)
    start = time.time()
    beam_job.run(opts, lines)
    print(f"[upm] pipeline finished in {time.time() - start:.1f}s", flush=True)


# The embedded mini-cluster is one JVM with one embedded Python interpreter (thread mode): its
# slots share one GIL, so a higher parallelism there splits the work without adding a core.
ONE_INTERPRETER = ("[upm] note: the embedded mini-cluster runs every slot in one Python "
                   "interpreter, so --parallelism {n} adds no cores here; for {n} cores use "
                   "`upm flink up --taskmanagers {n}` and `upm submit --parallelism {n}`")


def run_flink(opts, total_messages: int | None, quiet: bool = False) -> None:
    """Run the Flink job on the embedded mini-cluster, printing progress from its REST API."""
    from pipelines import flink_job
    from pipelines.ports import free_port

    opts = dataclasses.replace(opts, rest_port=opts.rest_port or free_port())
    env, _ = flink_job.environment(opts)
    flink_job.build(env, opts)
    base = f"http://127.0.0.1:{opts.rest_port}"
    print(f"[upm] Flink mini-cluster: web UI {base}/ (parallelism {opts.parallelism})", flush=True)
    if opts.parallelism > 1:
        print(ONE_INTERPRETER.format(n=opts.parallelism), flush=True)
    error: list[BaseException] = []

    def execute():
        try:
            env.execute(opts.job_name)
        except BaseException as e:  # reported below, on the main thread
            error.append(e)

    t = threading.Thread(target=execute, name="flink-execute", daemon=True)
    start = time.time()
    t.start()
    job_id = None
    try:
        _watch(t, base, total_messages, quiet, start, error)
        flink_job.clean_run_temp_dir(opts)
    except Interrupted:
        print("[upm] interrupted: cancelling the job and stopping the mini-cluster", flush=True)
        job_id = flink_progress.running_job_id(base)
        if job_id:
            flink_progress.cancel(base, job_id)
        t.join(timeout=30)
        import logging
        logging.disable(logging.CRITICAL)  # py4j would log every call to the gateway it loses
        stop_jvm_children()
        raise
    if error:
        log = Path(opts.output_dir) / "flink" / "log"
        raise UserError(f"the Flink job failed: {root_cause(error[0])} (Flink log: {log})",
                        exit_code=1)
    print(f"[upm] job finished in {time.time() - start:.1f}s", flush=True)


def _watch(t: threading.Thread, base: str, total_messages: int | None, quiet: bool,
           start: float, error: list) -> None:
    """Print progress every two seconds until the job thread ends."""
    job_id = None
    while t.is_alive():
        t.join(timeout=2.0)
        if quiet or not t.is_alive():
            continue
        job_id = job_id or flink_progress.running_job_id(base)
        if not job_id:
            continue
        try:
            c = flink_progress.upm_counters(base, job_id)
        except Exception:
            continue
        done = c.get("messages_in", 0)
        pct = f" ({100.0 * done / total_messages:5.1f}%)" if total_messages else ""
        print(f"[upm] {time.time() - start:6.1f}s  messages {done}{pct}  trained "
              f"{c.get('trained', 0)}  duplicates {c.get('duplicates', 0)}  late "
              f"{c.get('late', 0)}  dead {c.get('dead_letters', 0)}  snapshots "
              f"{c.get('snapshots_written', 0)}  quarantines {c.get('quarantines', 0)}", flush=True)


@contextlib.contextmanager
def signals_interrupt():
    """SIGINT and SIGTERM raise Interrupted on the main thread while the job runs; a second
    signal during the clean-up ends the process at once (the JVM is killed first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"seen": False}

    def handler(signum, frame):
        if state["seen"]:
            stop_jvm_children(timeout_s=0)
            os._exit(128 + signum)
        state["seen"] = True
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
