"""Ctrl-C (SIGINT) and SIGTERM on `upm run`: the job is cancelled, the mini-cluster's JVM is
ended, a partial summary is printed, the exit code is 130/143, and a second run into the same
output refuses (one line) unless told to --append."""

import os
import re
import signal
import subprocess
import sys
import time

from runners.processes import alive, java_children


def run_until_progress(out, *extra):
    proc = subprocess.Popen([sys.executable, "-m", "runners.cli", "run", "--output", str(out),
                             "--tenants", "4", "--windows-per-tenant", "20000", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # synchronise on the job's own progress line, not on time
        seen.append(line)
        if re.search(r"messages [1-9]", line):
            return proc, seen
    proc.wait()
    raise AssertionError("the job ended before it showed progress:\n" + "".join(seen[-40:]))


def stop_with(proc, sig):
    jvms = java_children(proc.pid)
    assert jvms, "the mini-cluster JVM is a child of upm run"
    proc.send_signal(sig)
    rest = proc.stdout.read()
    proc.wait(timeout=600)
    deadline = time.monotonic() + 120
    while any(alive(p) for p in jvms) and time.monotonic() < deadline:
        time.sleep(0.2)
    return rest, [p for p in jvms if alive(p)]


def test_signals_stop_the_job_and_its_jvm_and_records_are_never_wiped(tmp_path):
    out = tmp_path / "out"
    proc, _ = run_until_progress(out)
    rest, left = stop_with(proc, signal.SIGINT)
    assert proc.returncode == 130, rest[-3000:]
    assert not left, f"JVM still running: {left}"
    assert "partial summary" in rest and "TOTAL" in rest and "Traceback" not in rest, rest[-3000:]

    again = subprocess.run([sys.executable, "-m", "runners.cli", "run", "--output", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "earlier run" in again.stderr.strip().splitlines()[-1]

    proc, _ = run_until_progress(out, "--append")
    rest, left = stop_with(proc, signal.SIGTERM)
    assert proc.returncode == 143, rest[-3000:]
    assert not left, f"JVM still running: {left}"
    assert "partial summary" in rest and "Traceback" not in rest, rest[-3000:]
    assert os.path.isdir(out / "records")
