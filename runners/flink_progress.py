"""Watching a running Flink job through its REST API: job state and the operators' UPM counters."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

PROGRESS_METRICS = ("messages_in", "dead_letters", "windows_in", "duplicates", "late", "released",
                    "trained", "snapshots_written", "quarantines", "train_calls", "trained_ahead")


def rest_get(base: str, path: str, timeout: float = 2.0):
    with urllib.request.urlopen(base.rstrip("/") + path, timeout=timeout) as r:
        return json.load(r)


def upm_counters(base: str, job_id: str) -> dict[str, int]:
    """Sum of every `upm.<name>_total` operator counter over all vertices and subtasks, by
    `<name>`."""
    totals: dict[str, int] = {}
    job = rest_get(base, f"/jobs/{job_id}")
    for v in job.get("vertices", []):
        path = f"/jobs/{job_id}/vertices/{v['id']}/subtasks/metrics"
        ids = [m["id"] for m in rest_get(base, path)]
        wanted = [i for i in ids if ".upm." in i and ".upm.tenant." not in i
                  and _base_name(i) in PROGRESS_METRICS]
        if not wanted:
            continue
        for m in rest_get(base, path + "?agg=sum&get=" + ",".join(wanted)):
            name = _base_name(m["id"])
            totals[name] = totals.get(name, 0) + int(float(m.get("sum", 0)))
    return totals


def _base_name(metric_id: str) -> str:
    """`0.Tenant.upm.windows_in_total` -> `windows_in` (counters carry Prometheus' suffix)."""
    return metric_id.rsplit(".", 1)[-1].removesuffix("_total")


def job_state(base: str, job_id: str) -> str | None:
    try:
        return rest_get(base, f"/jobs/{job_id}")["state"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None


def running_job_id(base: str) -> str | None:
    try:
        jobs = rest_get(base, "/jobs/overview")["jobs"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
    live = [j for j in jobs if j["state"] in ("RUNNING", "CREATED", "INITIALIZING")]
    return live[0]["jid"] if live else None


def cancel(base: str, job_id: str) -> bool:
    """Ask the cluster to cancel a job (REST `PATCH /jobs/<id>?mode=cancel`)."""
    req = urllib.request.Request(f"{base.rstrip('/')}/jobs/{job_id}?mode=cancel", method="PATCH")
    try:
        with urllib.request.urlopen(req, timeout=10):
            return True
    except (urllib.error.URLError, OSError):
        return False
