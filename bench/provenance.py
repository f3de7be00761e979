"""Where a bench result comes from: when, on what machine, at which commit. Every bench writes
it into its bench/results/<name>.json (`write_results`), and bench/report.py prints it under the
table, so a figure the README quotes can be traced to the run that measured it. Standard
library only (bench/report.py runs outside both venvs)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu()}, {memory:.0f} GiB"


def commit() -> str:
    """The checkout's commit, `-dirty` when tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=RESULTS.parent, capture_output=True,
                              text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance() -> dict:
    return {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "commit": commit()}


def write_results(name: str, doc: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**doc, "provenance": provenance()}, indent=2))
    return path


def provenance_line(p: dict | None) -> str:
    if not p:
        return "Measured: not recorded (a result written before bench/provenance.py)."
    note = f" ({p['note']})" if p.get("note") else ""
    return f"Measured {p['measured_at']} on {p['machine']}, commit {p['commit']}{note}."
