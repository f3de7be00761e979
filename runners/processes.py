"""Processes this one started, read from /proc: the JVMs of PyFlink's gateway and mini-cluster,
which ignore SIGINT and outlive their Python process unless they are ended."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def java_children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        fields = _stat(proc.name)
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if fields and fields[1] == str(pid) and b"java" in cmd:
            out.append(int(proc.name))
    return out


def stop_jvm_children(timeout_s: float = 30.0) -> None:
    """SIGKILL the JVMs this process started and wait until they are gone.

    Not SIGTERM: the JVM's shutdown hooks finalize the Python interpreter embedded in it (thread
    mode), and TensorFlow's extensions crashed it there (SIGSEGV in optree, an hs_err file in the
    user's directory). Called once the job is cancelled, so nothing is left to flush: what the
    sinks committed at checkpoints is all the run keeps either way."""
    pids = java_children(os.getpid())
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if pids:
            time.sleep(0.1)


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
