"""Rescaling through the command line: a job stopped with a savepoint at parallelism 1 resumes
at 2 (on RocksDB, from a savepoint the heap backend took), is stopped again and resumes at 1
(back on the heap), and every tenant ends exactly where one uninterrupted run ends."""

import pytest

from runners import flink_cluster as fc
from state.scenario import ScenarioSpec, generate
from pipelines.ports import free_port_range
from tests.flink.test_cluster import PROFILE, publish, running_cluster, stop, upm, wait_for

# Only the tenants' own frontiers release held windows (no processing-time quiet release), so
# what each job stage trains does not depend on how long a stage runs.
ARGS = (*PROFILE, "--set", "replay.quiet_release_ms=0", "--checkpoint-interval-ms", "1500")


@pytest.fixture(scope="module")
def two_taskmanagers(tmp_path_factory):
    yield from running_cluster(tmp_path_factory, "rescale-cluster",
                               prometheus_ports=free_port_range(3), taskmanagers=2)


def test_rescale_1_to_2_to_1_keeps_every_model(two_taskmanagers, tmp_path):
    from model.snapshot import encode
    from pipelines.local_job import run_local
    from pipelines.summary import read_records, summarize
    from runners.flink_progress import upm_counters
    from state.config import UpmConfig

    spec = two_taskmanagers
    lines, expected = generate(ScenarioSpec(tenants=4, windows_per_tenant=900, seed=11))
    n = len(lines)
    parts = [lines[:n // 3], lines[n // 3:2 * n // 3], lines[2 * n // 3:]]
    inbox, store, savepoints = tmp_path / "inbox", tmp_path / "store", tmp_path / "savepoints"
    inbox.mkdir()
    stages = [("1", "hashmap"), ("2", "rocksdb"), ("1", "hashmap")]
    savepoint = None
    for i, (part, (parallelism, backend)) in enumerate(zip(parts, stages)):
        publish(inbox, f"part-{i}.jsonl", part)
        how = ["resume", "--from-savepoint", savepoint] if savepoint else ["submit"]
        out = upm(*how, "--store", str(store), "--rest-port", str(spec.rest_port),
                  "--input", str(inbox), "--follow", "--parallelism", parallelism,
                  "--state-backend", backend, *ARGS)
        job_id = out.split("submitted job ")[1].split()[0]
        wait_for(lambda: upm_counters(spec.rest, job_id).get("messages_in") == len(part),
                 timeout=300)
        # (a stage at parallelism 2 may still be starting its second TaskManager's task)
        wait_for(lambda: all(v["status"] == "RUNNING"
                             for v in fc.rest(spec, f"/jobs/{job_id}")["vertices"]), timeout=300)
        # Every line of the part has left the source: the savepoint's barriers follow them.
        tenant = [v for v in fc.rest(spec, f"/jobs/{job_id}")["vertices"]
                  if v["name"].startswith("Tenant")][0]
        assert tenant["parallelism"] == int(parallelism)
        backend_used = fc.rest(spec, f"/jobs/{job_id}/checkpoints/config")["state_backend"]
        assert backend_used.lower().startswith({"hashmap": "hashmap", "rocksdb": "embeddedrocksdb"}[
            backend]), backend_used
        savepoint = stop(spec, job_id, savepoints, drain=i == len(parts) - 1)

    cfg = UpmConfig().with_overrides(a for a in ARGS if "=" in a and "." in a.split("=")[0])
    core = run_local(lines, cfg, keep_deltas=True)
    summary = summarize(store / "records")
    for tenant, t in core.tenants.items():
        got, want = summary["tenants"][tenant], core.counts(tenant)
        for k in ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending"):
            assert got[k] == want[k], (tenant, k, got[k], want[k])
        assert got["balanced"]
    # nothing lost, nothing trained twice: one shadow delta per window the core trains
    deltas = [d["prediction_id"] for d in read_records(store / "records", "shadow_deltas")]
    assert len(deltas) == len(set(deltas))
    assert sorted(deltas) == sorted(d.prediction_id for d in core.deltas)
    # the same models: every snapshot version, bit for bit
    snaps = read_records(store / "records", "snapshots")
    want = {s.snapshot_id: encode(s, "zstd").sha256
            for t in core.tenants.values() for s in t.snapshots}
    assert {s["snapshot_id"]: s["sha256"] for s in snaps} == want
    # the same quarantines and prequential scores
    key = ("tenant_id", "drift_window_id", "snapshot_id", "rule", "drift_p95", "sample_count")
    quarantines = [tuple(q[k] for k in key) for q in read_records(store / "records", "quarantines")
                   if q["event"] == "ai.upm.drift.quarantine"]
    assert sorted(quarantines) == sorted(tuple(getattr(q, k) for k in key)
                                         for t in core.tenants.values() for q in t.quarantines)
    stats = [s for s in read_records(store / "records", "stats") if s["operator"] == "trainer"]
    assert {s["tenant_id"]: s["scores"] for s in stats} == {
        tenant: t.trainer.scores() for tenant, t in core.tenants.items()}
