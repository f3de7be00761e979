"""A standalone Flink cluster started by a fixture (PyFlink's own daemons, on free ports):
submit the job, see it RUNNING with named operators and readable UPM metrics, cancel it."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from runners import flink_cluster as fc
from state.scenario import ScenarioSpec, generate

OPERATORS = ("Parse", "ReplayBuffer", "Trainer", "SnapshotWriter", "DriftMonitor", "Governor")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    store = tmp_path_factory.mktemp("cluster")
    p = free_port()
    spec = fc.ClusterSpec(store=str(store), rest_port=p, rpc_port=free_port(),
                          prometheus_ports=f"{free_port()}")
    fc.up(spec)
    try:
        yield spec
    finally:
        fc.down(spec)
        deadline = time.time() + 30
        while fc.overview(spec) and time.time() < deadline:
            time.sleep(0.5)


def upm(*args):
    proc = subprocess.run([sys.executable, "-m", "runners.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def get(spec, path):
    with urllib.request.urlopen(spec.rest + path, timeout=5) as r:
        return json.load(r)


def wait_for(fn, timeout=120, every=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("condition not met in time")


def test_submit_watch_metrics_cancel(cluster):
    spec = cluster
    inbox = spec.dir.parent.parent / "inbox"
    inbox.mkdir()
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=400, seed=3))
    (inbox / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    out = upm("submit", "--store", str(spec.dir.parent.parent), "--rest-port",
              str(spec.rest_port), "--input", str(inbox), "--follow")
    job_id = out.split("submitted job ")[1].split()[0]
    assert f"http://127.0.0.1:{spec.rest_port}/" in out

    overview = wait_for(lambda: [j for j in get(spec, "/jobs/overview")["jobs"]
                                 if j["jid"] == job_id and j["state"] == "RUNNING"])
    assert overview[0]["name"] == "upm-stream"
    names = " ".join(v["name"] for v in get(spec, f"/jobs/{job_id}")["vertices"])
    for op in OPERATORS:
        assert op in names, names

    from pipelines.flink_progress import upm_counters
    windows = sum(t["windows_in"] - t["dead_letters"] for t in expected.tenants.values())
    counters = wait_for(lambda: (c := upm_counters(spec.rest, job_id)).get("windows_in") == windows
                        and c, timeout=180)
    assert counters["messages_in"] == len(lines)
    assert counters["dead_letters"] == expected.totals()["dead_letters"]
    assert counters["duplicates"] == expected.totals()["duplicates"]

    assert job_id in upm("jobs", "--rest-port", str(spec.rest_port))
    upm("cancel", "--rest-port", str(spec.rest_port), job_id)
    wait_for(lambda: get(spec, f"/jobs/{job_id}")["state"] == "CANCELED", timeout=60)
