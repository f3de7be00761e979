"""A standalone Flink cluster started by a fixture (PyFlink's own daemons, on free ports):
submit the job, see it RUNNING with named operators and readable UPM metrics, cancel it."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.core.servers import free_port
from tests.flink.test_kafka import broker  # noqa: F401  (the Kafka broker fixture)

from runners import flink_cluster as fc
from state.scenario import ScenarioSpec, generate, generate_timed

OPERATORS = ("Files", "TenantKey", "Tenant", "SnapshotWriter", "Governor")


def running_cluster(tmp_path_factory, name: str, **spec):
    """A standalone cluster on free ports for a module's tests, brought down after them."""
    spec = fc.ClusterSpec(store=str(tmp_path_factory.mktemp(name)), rest_port=free_port(),
                          rpc_port=free_port(), **spec)
    fc.up(spec)
    try:
        yield spec
    finally:
        fc.down(spec)
        deadline = time.time() + 30
        while fc.overview(spec) and time.time() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, "cluster", prometheus_ports=f"{free_port()}")


def upm(*args):
    proc = subprocess.run([sys.executable, "-m", "runners.cli", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def publish(inbox, name: str, lines: list[str]) -> None:
    """Write a file where a job's directory watch sees it whole (hidden until renamed)."""
    tmp = inbox / f".{name}"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(inbox / name)


def get(spec, path):
    with urllib.request.urlopen(spec.rest + path, timeout=30) as r:
        return json.load(r)


def wait_for(fn, timeout=300, every=1.0):
    """Poll `fn` until it returns something true. A slow or failed REST answer (a loaded
    machine, a JobManager busy restarting a job) is retried, not taken as an answer; at the
    deadline the last value or error is reported. Deadlines are sized for a loaded 2-core box."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            v = fn()
        except (OSError, ValueError, KeyError) as e:  # URLError and timeouts are OSErrors
            v, last = None, f"{type(e).__name__}: {e}"
        else:
            last = v
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout} s (last: {last!r})")


def test_submit_watch_metrics_cancel(cluster):
    spec = cluster
    inbox = spec.dir.parent.parent / "inbox"
    inbox.mkdir()
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=400, seed=3))
    (inbox / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    out = upm("submit", "--store", str(spec.dir.parent.parent), "--rest-port",
              str(spec.rest_port), "--input", str(inbox), "--follow",
              "--set", "replay.quiet_release_ms=2000")
    job_id = out.split("submitted job ")[1].split()[0]
    assert f"http://127.0.0.1:{spec.rest_port}/" in out

    overview = wait_for(lambda: [j for j in get(spec, "/jobs/overview")["jobs"]
                                 if j["jid"] == job_id and j["state"] == "RUNNING"])
    assert overview[0]["name"] == "upm-stream"
    names = " ".join(v["name"] for v in get(spec, f"/jobs/{job_id}")["vertices"])
    for op in OPERATORS:
        assert op in names, names

    from runners.flink_progress import upm_counters
    windows = sum(t["windows_in"] - t["dead_letters"] for t in expected.tenants.values())
    counters = wait_for(lambda: (c := upm_counters(spec.rest, job_id)).get("windows_in") == windows
                        and c, timeout=180)
    assert counters["messages_in"] == len(lines)
    assert counters["dead_letters"] == expected.totals()["dead_letters"]
    assert counters["duplicates"] == expected.totals()["duplicates"]
    # The input is unbounded and now quiet: each tenant's last windows, held by the release
    # delay, are released by the quiet timer (the watermark never releases), so every window
    # that is neither a duplicate nor late is released.
    tot = expected.totals()
    wait_for(lambda: upm_counters(spec.rest, job_id).get("released")
             == windows - tot["duplicates"] - tot["late"], timeout=180)
    # The two tenants' batches made ready in one watermark pass train in one TensorFlow call
    # (state/train_group.py): one tenant's are trained ahead in the other's call.
    counters = wait_for(lambda: (c := upm_counters(spec.rest, job_id)).get("trained_ahead")
                        and c, timeout=180)
    assert 0 < counters["train_calls"] < counters["trained"] / 4  # fewer calls than batches

    # per-tenant values, as the web UI shows them, once each tenant's Trainer has taken a step
    trainer = [v for v in get(spec, f"/jobs/{job_id}")["vertices"]
               if v["name"].startswith("Tenant")][0]

    def tenant_metric_ids():
        ids = [m["id"] for m in get(spec, f"/jobs/{job_id}/vertices/{trainer['id']}/subtasks/metrics")]
        return all(any(f"upm.tenant.{t}.loss_micro" in i for i in ids)
                   for t in expected.tenants) and ids
    wait_for(tenant_metric_ids, timeout=300)

    assert job_id in upm("jobs", "--rest-port", str(spec.rest_port))
    upm("cancel", "--rest-port", str(spec.rest_port), job_id)
    wait_for(lambda: get(spec, f"/jobs/{job_id}")["state"] == "CANCELED", timeout=60)


def submit(spec, store, *args):
    out = upm("submit", "--store", str(store), "--rest-port", str(spec.rest_port),
              "--checkpoint-interval-ms", "1500", *args)
    return out.split("submitted job ")[1].split()[0]


def state(spec, job_id):
    return get(spec, f"/jobs/{job_id}")["state"]


def completed_checkpoints(spec, job_id):
    return get(spec, f"/jobs/{job_id}/checkpoints")["counts"]["completed"]


PROFILE = ["--set", "trainer.snapshot_interval=200", "--set", "drift.window_duration_ms=600000",
           "--set", "drift.sample_size=300", "--shadow-deltas"]


def assert_each_window_trained_once(store, lines, expected):
    """The records of a job that ran to the end of `lines` (through faults): every window
    accounted for, each trained once, snapshot versions written once each, bit-identical to
    the engine-free core's."""
    from model.snapshot import encode
    from pipelines.local_job import run_local
    from pipelines.summary import read_records, summarize
    from state.config import UpmConfig

    summary = summarize(store / "records")
    for tenant, exp in expected.tenants.items():
        got = summary["tenants"][tenant]
        for k in ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending"):
            assert got[k] == exp[k], (tenant, k)
    deltas = [d["prediction_id"] for d in read_records(store / "records", "shadow_deltas")]
    assert len(deltas) == len(set(deltas)) == expected.totals()["trained"]  # each trained once
    snaps = read_records(store / "records", "snapshots")
    ids = [s["snapshot_id"] for s in snaps]
    assert len(ids) == len(set(ids))
    for tenant in expected.tenants:
        versions = sorted(s["version"] for s in snaps if s["tenant_id"] == tenant)
        assert versions == list(range(1, len(versions) + 1)) and versions
    cfg = UpmConfig().with_overrides(a for a in PROFILE if "=" in a)
    core = {s.snapshot_id: encode(s, "zstd").sha256
            for t in run_local(lines, cfg).tenants.values() for s in t.snapshots}
    assert {s["snapshot_id"]: s["sha256"] for s in snaps} == core


def stop(spec, job_id: str, savepoints, drain: bool = False) -> str:
    """`upm stop --savepoint` as an operator runs it; the savepoint's location."""
    out = upm("stop", "--rest-port", str(spec.rest_port), job_id, "--savepoint",
              "--savepoint-dir", str(savepoints), *(["--drain"] if drain else []))
    wait_for(lambda: state(spec, job_id) == "FINISHED", timeout=120)
    return out.split("savepoint ")[-1].strip()


def test_stop_with_savepoint_and_resume(cluster, tmp_path):
    """`upm stop --savepoint` halfway, `upm resume` from it: versions continue, a duplicate
    whose first copy came before the savepoint is still recognised after it, and the job, at
    last stopped with `--drain` (which releases every held window), trained exactly the
    windows the engine-free core trains, each once, into bit-identical snapshots."""
    from model.snapshot import encode
    from pipelines.local_job import run_local
    from pipelines.summary import read_records, summarize
    from state.config import UpmConfig

    spec = cluster
    # Only the tenants' own frontiers release held windows (no processing-time quiet release),
    # so what each half trains does not depend on how long it runs.
    args = (*PROFILE, "--set", "replay.quiet_release_ms=0")
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=1200, seed=9))
    half = len(lines) // 2
    seen = set(lines[:half])
    straddling = sum(1 for x in lines[half:] if x in seen and '"features"' in x)
    assert straddling > 0
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "part-0.jsonl").write_text("\n".join(lines[:half]) + "\n")
    store = tmp_path / "store"
    job_id = submit(spec, store, "--input", str(inbox), "--follow", *args)
    from runners.flink_progress import upm_counters
    wait_for(lambda: (c := upm_counters(spec.rest, job_id)).get("messages_in") == half
             and c.get("snapshots_written", 0) >= 4, timeout=240)
    savepoint = stop(spec, job_id, tmp_path / "savepoints")
    before = read_records(store / "records", "snapshots")
    assert before
    out = upm("resume", "--store", str(store), "--rest-port", str(spec.rest_port),
              "--from-savepoint", savepoint, "--input", str(inbox), "--follow",
              "--checkpoint-interval-ms", "1500", *args)
    job2 = out.split("submitted job ")[1].split()[0]
    wait_for(lambda: state(spec, job2) == "RUNNING", timeout=120)
    publish(inbox, "part-1.jsonl", lines[half:])
    wait_for(lambda: upm_counters(spec.rest, job2).get("messages_in") == len(lines) - half,
             timeout=300)
    # Every message has left the source, so the drained savepoint's barrier follows them all.
    stop(spec, job2, tmp_path / "savepoints", drain=True)

    dups = read_records(store / "records", "duplicates")
    assert len(dups) == expected.totals()["duplicates"]
    after = read_records(store / "records", "snapshots")
    for tenant in expected.tenants:
        v_before = sorted(s["version"] for s in before if s["tenant_id"] == tenant)
        v_all = sorted(s["version"] for s in after if s["tenant_id"] == tenant)
        assert v_all[:len(v_before)] == v_before
        assert v_all == list(range(1, len(v_all) + 1)) and len(v_all) > len(v_before)

    cfg = UpmConfig().with_overrides(a for a in args if "=" in a)
    core = run_local(lines, cfg, keep_deltas=True)
    summary = summarize(store / "records")
    for tenant in expected.tenants:
        got, want = summary["tenants"][tenant], core.counts(tenant)
        for k in ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending"):
            assert got[k] == want[k], (tenant, k, got[k], want[k])
    # none lost, none trained twice: one shadow delta per window the core trains
    ids = [d["prediction_id"] for d in read_records(store / "records", "shadow_deltas")]
    assert len(ids) == len(set(ids)), "a window was trained twice"
    assert sorted(ids) == sorted(d.prediction_id for d in core.deltas)
    want = {s.snapshot_id: encode(s, "zstd").sha256
            for t in core.tenants.values() for s in t.snapshots}
    assert {s["snapshot_id"]: s["sha256"] for s in after} == want


def test_kafka_exactly_once_across_a_taskmanager_kill(cluster, broker, tmp_path):
    """Windows from a Kafka topic, records to Kafka topics through the transactional sink: kill
    every TaskManager mid-stream, and read every record topic back with read_committed. Each
    record is there exactly once (an at-least-once sink would repeat what the failed attempt
    wrote after its last checkpoint)."""
    import os
    import signal

    from tests.flink.test_kafka import consume_all, create_topics, produce_lines
    from runners.flink_progress import upm_counters

    spec = cluster
    # Long enough that the job is still running when the kill comes (the job trains the first
    # 500 windows within seconds; the whole input takes several times that).
    lines, expected = generate(ScenarioSpec(tenants=3, windows_per_tenant=6000, seed=5))
    kinds = ("snapshots", "quarantines", "dead_letters", "duplicates", "late", "shadow_deltas",
             "drift_scores", "gaps", "stats", "rollbacks", "refusals")
    create_topics(broker, ["kill.windows"], partitions=2)
    create_topics(broker, [f"kill.out.{k}" for k in kinds])
    produce_lines(broker, "kill.windows", lines)
    store = tmp_path / "store"
    job_id = submit(spec, store, "--kafka-bootstrap", broker, "--kafka-topic", "kill.windows",
                    "--kafka-bounded", "--kafka-output-prefix", "kill.out", *PROFILE)
    wait_for(lambda: state(spec, job_id) == "RUNNING" and completed_checkpoints(spec, job_id) >= 1
             and upm_counters(spec.rest, job_id).get("trained", 0) > 500, timeout=300, every=0.5)
    for pid in fc.taskmanager_pids(spec):
        os.kill(pid, signal.SIGKILL)
    fc.add_taskmanager(spec)
    wait_for(lambda: state(spec, job_id) in ("FINISHED", "FAILED"), timeout=600, every=1)
    assert state(spec, job_id) == "FINISHED"
    assert get(spec, f"/jobs/{job_id}/checkpoints")["counts"]["restored"] >= 1

    got = {k: consume_all(broker, f"kill.out.{k}") for k in kinds}
    tot = expected.totals()
    assert len(got["dead_letters"]) == tot["dead_letters"]
    assert len(got["duplicates"]) == tot["duplicates"]
    assert len(got["late"]) == tot["late"]
    ids = [d["prediction_id"] for d in got["shadow_deltas"]]
    assert len(ids) == len(set(ids)) == tot["trained"]  # each trained window once, none lost
    snaps = [s["snapshot_id"] for s in got["snapshots"]]
    assert len(snaps) == len(set(snaps)) == sum(t["trained"] // 200
                                               for t in expected.tenants.values())
    from pipelines.local_job import run_local
    from state.config import UpmConfig
    core = run_local(lines, UpmConfig().with_overrides(a for a in PROFILE if "=" in a))
    q = [r for r in got["quarantines"] if r["event"] == "ai.upm.drift.quarantine"]
    assert sorted((r["tenant_id"], r["drift_window_id"]) for r in q) == sorted(
        (t, r.drift_window_id) for t, run in core.tenants.items() for r in run.quarantines)
    stats = got["stats"]
    assert len(stats) == 3 * len(expected.tenants)  # one per operator and tenant, once
    assert not got["refusals"]


def test_kafka_event_time_per_partition_with_an_idle_partition(cluster, broker, tmp_path):
    """`source.event_time = "kafka"`: the Kafka source makes the watermark from the records'
    Kafka timestamps, per partition. Every message goes to partition 0, stamped as a producer
    that sends it LAG after it arrives would stamp it; partition 1 stays idle. The Tenant
    operator's watermark reaches the newest timestamp less the out-of-orderness (Kafka's time,
    not the windows': they are LAG older), so the idle partition does not hold it back; the
    drift timers fire on it, and every window that is neither a duplicate nor late is
    released (the ReplayBuffer still decides per tenant, in window time)."""
    from tests.flink.test_kafka import create_topics, produce_lines
    from runners.flink_progress import upm_counters

    spec, lag, ooo = cluster, 3_000, 1_000
    timed, expected = generate_timed(ScenarioSpec(tenants=2, windows_per_tenant=600, seed=11))
    stamps = [t + lag for t, _ in timed]
    create_topics(broker, ["et.windows"], partitions=2)
    produce_lines(broker, "et.windows", [line for _, line in timed], partition=0,
                  timestamps=stamps)
    job_id = submit(spec, tmp_path / "store", "--kafka-bootstrap", broker, "--kafka-topic",
                    "et.windows", "--set", "source.event_time=kafka",
                    "--set", f"source.out_of_orderness_ms={ooo}", "--set", "source.idleness_ms=1000",
                    "--set", "replay.quiet_release_ms=2000",
                    "--set", "trainer.snapshot_interval=100", "--set", "drift.window_duration_ms=60000",
                    "--set", "drift.sample_size=20")
    tenant_vertex = wait_for(lambda: [v["id"] for v in get(spec, f"/jobs/{job_id}")["vertices"]
                                      if v["name"].startswith("Tenant")])[0]

    def watermark():
        marks = get(spec, f"/jobs/{job_id}/vertices/{tenant_vertex}/watermarks")
        return min(int(m["value"]) for m in marks)
    want = max(stamps) - ooo - 1  # BoundedOutOfOrderness: the newest timestamp - ooo - 1 ms
    wait_for(lambda: watermark() == want, timeout=300)

    tot = expected.totals()
    windows = sum(t["windows_in"] - t["dead_letters"] for t in expected.tenants.values())
    counters = wait_for(lambda: (c := upm_counters(spec.rest, job_id)).get("released")
                        == windows - tot["duplicates"] - tot["late"] and c, timeout=300)
    assert counters["late"] == tot["late"] and counters["duplicates"] == tot["duplicates"]

    def drift_scored():  # a per-tenant drift p95 is pushed only when an event-time timer fired
        ids = [m["id"] for m in get(
            spec, f"/jobs/{job_id}/vertices/{tenant_vertex}/subtasks/metrics")]
        return all(any(f"upm.tenant.{t}.drift_p95_micro" in i for i in ids)
                   for t in expected.tenants)
    wait_for(drift_scored, timeout=120)
    upm("cancel", "--rest-port", str(spec.rest_port), job_id)
    wait_for(lambda: state(spec, job_id) == "CANCELED", timeout=60)
