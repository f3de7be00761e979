"""Backfill (the batch Beam pipeline over tfx-bsl TFXIO) against the streaming path.

Bit for bit: a backfill snapshot's arrays must equal the streaming snapshot's of the same
version (TOL = 0.0). The backfill forms the same micro-batches in the same order and runs the
same Adam step (runs of full batches in one TensorFlow graph loop). The streaming reference is the Beam streaming pipeline itself
(whose agreement with the Flink job and the core is tested elsewhere).

Windows the stream would judge late, or train in feedback order, are trained in event-time order
by a backfill, so these comparisons use a scenario with neither (it keeps duplicates,
out-of-order pairs and malformed messages).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.lifecycle.registry import open_registry
from model.lifecycle.store import open_store
from pipelines import backfill_job, beam_job
from pipelines.options import JobOptions
from pipelines.summary import read_records
from runners.embedded import DEMO_PROFILE, demo_config, profile_toml
from state.scenario import DEFAULT_START_MS, ScenarioSpec, generate
from tests.beam import history_files as hf

TOL = 0.0  # what the README claims: the same bits
REPO = Path(__file__).resolve().parents[2]
SPEC = ScenarioSpec(tenants=2, windows_per_tenant=1500, late_rate=0.0, unlabeled_rate=0.0,
                    seed=11)


def snapshots_of(out: Path) -> dict[str, dict]:
    """snapshot_id -> {record, arrays} of every snapshot a run wrote under `out`."""
    store = open_store(str(out))
    found = {}
    for rec in read_records(out / "records", "snapshots"):
        snap = store.read_snapshot(rec["uri"], rec["sha256"])
        found[rec["snapshot_id"]] = {"record": rec, "manifest": snap.manifest,
                                     "arrays": snap.arrays}
    return found


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """The scenario through the Beam streaming pipeline: the reference."""
    lines, _ = generate(SPEC)
    out = tmp_path_factory.mktemp("stream")
    beam_job.run(JobOptions(inputs=(), output_dir=str(out), config=demo_config(),
                            warm_start=False), lines)
    return lines, out, snapshots_of(out)


BAD_PARQUET_ROWS = [
    {"window_id": "bad-nan", "tenant_id": "acme", "window_start": DEFAULT_START_MS,
     "window_end": DEFAULT_START_MS + 1000, "features": [("clicks", float("nan"))], "label": 1.0},
    {"window_id": "bad-order", "tenant_id": "acme", "window_start": DEFAULT_START_MS + 5000,
     "window_end": DEFAULT_START_MS + 1000, "features": [("clicks", 1.0)], "label": 1.0},
]
BAD_EXAMPLES = [
    {"window_id": "bad-no-end", "tenant_id": "globex", "window_start": DEFAULT_START_MS,
     "features": {"clicks": 1.0}, "label": 1.0},
    {"window_id": "bad-tenant", "tenant_id": "../etc", "window_start": DEFAULT_START_MS,
     "window_end": DEFAULT_START_MS + 1000, "features": {"clicks": 1.0}, "label": 1.0},
]


def write_history(fmt: str, lines: list[str], root: Path) -> tuple[str, list[str]]:
    """History files of the scenario in `fmt`; returns the input pattern and the dead-letter
    reason classes its bad rows must produce."""
    windows = hf.windows_of(lines)
    if fmt == "jsonl":
        hf.write_jsonl(root / "history.jsonl", lines)
        return str(root / "history.jsonl"), []
    if fmt == "parquet":
        hf.write_parquet(root / "history", windows, files=2, extra_rows=BAD_PARQUET_ROWS)
        return str(root / "history"), ["not_finite", "bad_timestamp"]  # a directory
    hf.write_tfrecord(root / "history" / "windows.tfrecord.gz", windows, extra=BAD_EXAMPLES)
    return str(root / "history" / "*.tfrecord.gz"), ["missing_field", "unsafe_tenant_id"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "tfrecord"])
def test_backfill_matches_the_streaming_path(fmt, stream, tmp_path):
    lines, stream_out, reference = stream
    pattern, bad_reasons = write_history(fmt, lines, tmp_path)
    result = backfill_job.run(backfill_job.BackfillOptions(
        inputs=(pattern,), start_ms=DEFAULT_START_MS, output_dir=str(tmp_path / "out"),
        config=demo_config()))
    assert result.input_format == fmt
    assert backfill_job.balanced(result.totals), result.totals
    dead = read_records(tmp_path / "out" / "records", "dead_letters")
    if fmt == "jsonl":  # the scenario's malformed messages, as the stream dead-letters them
        assert len(dead) == len(read_records(stream_out / "records", "dead_letters")) > 0
    else:
        assert sorted(d["reason"].split(":")[0] for d in dead) == sorted(bad_reasons)

    stream_stats = {s["tenant_id"]: s for s in read_records(stream_out / "records", "stats")
                    if s["operator"] == "replay"}
    backfilled = snapshots_of(tmp_path / "out")
    for tenant, counts in result.tenants.items():
        assert backfill_job.balanced(counts)
        assert counts["duplicates"] == stream_stats[tenant]["counters"]["duplicates"]
        streamed = sorted((s for s in reference.values() if s["record"]["tenant_id"] == tenant),
                          key=lambda s: s["record"]["version"])
        assert streamed, tenant
        for s in streamed:
            b = backfilled[s["record"]["snapshot_id"]]
            for key in ("version", "window_start", "window_end", "windows_trained",
                        "windows_in_snapshot", "steps", "parent_snapshot_id"):
                assert b["manifest"][key] == s["manifest"][key], (tenant, key)
            assert b["manifest"]["mode"] == "backfill"
            assert max_diff(b["arrays"], s["arrays"]) <= TOL
        # Trained windows after the last interval snapshot are kept in one more snapshot.
        last = max(b["manifest"]["version"] for b in backfilled.values()
                   if b["manifest"]["tenant_id"] == tenant)
        assert last == streamed[-1]["manifest"]["version"] + (
            1 if counts["trained"] % 500 else 0) == counts["last_version"]

    registry = open_registry(str(tmp_path / "out"))
    for sid in backfilled:
        tenant = backfilled[sid]["manifest"]["tenant_id"]
        entry = registry.tenant(tenant)["artifacts"][sid]
        assert entry["lineage"]["mode"] == "backfill"
        assert entry["sha256"] == backfilled[sid]["record"]["sha256"]
    measured = read_records(tmp_path / "out" / "records", "drift_scores")
    assert measured and all(d["sample_count"] > 0 for d in measured)
    some = measured[0]
    entry = registry.tenant(some["tenant_id"])["artifacts"][some["snapshot_id"]]
    assert entry["metrics"]["drift_p95"] == pytest.approx(some["drift_p95"])


def test_streaming_jobs_warm_start_from_a_backfill_and_continue_its_versions(stream, tmp_path):
    """Backfill the history up to the end of v2, then stream the rest through Beam and through
    Flink: each continues at v3, from the backfill's weights, and lands where one uninterrupted
    stream lands."""
    lines, _, reference = stream
    tenant = "acme"
    ref = {s["manifest"]["version"]: s for s in reference.values()
           if s["manifest"]["tenant_id"] == tenant}
    split = ref[2]["manifest"]["window_end"] + 1
    windows = [w for w in hf.windows_of(lines) if w.tenant_id == tenant]
    assert len(windows) > 1000
    hf.write_jsonl(tmp_path / "history.jsonl", hf.jsonl_of([w for w in windows
                                                            if w.window_end < split]))
    rest = tmp_path / "rest.jsonl"
    hf.write_jsonl(rest, hf.jsonl_of([w for w in windows if w.window_end >= split]))
    conf = tmp_path / "demo.toml"
    conf.write_text(profile_toml(DEMO_PROFILE))
    engines = (("beam", sys.executable), ("flink", str(REPO / ".venv-flink/bin/python")))
    for engine, python in engines:
        out = tmp_path / engine  # a local store records absolute URIs: backfill into each
        result = backfill_job.run(backfill_job.BackfillOptions(
            inputs=(str(tmp_path / "history.jsonl"),), start_ms=DEFAULT_START_MS, end_ms=split,
            output_dir=str(out), config=demo_config()))
        assert result.tenants[tenant]["trained"] == 1000
        assert result.tenants[tenant]["last_version"] == 2
        shutil.rmtree(out / "records")
        proc = subprocess.run([python, "-m", "runners.cli", "run", "--engine", engine, "--input",
                               str(rest), "--config", str(conf), "--output", str(out), "--quiet"],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, engine + proc.stdout[-2000:] + proc.stderr[-3000:]
        continued = {s["manifest"]["version"]: s for s in snapshots_of(out).values()}
        assert min(continued) == 3, engine
        assert continued[3]["manifest"]["parent_snapshot_id"] == ref[2]["record"]["snapshot_id"]
        assert continued[3]["manifest"]["mode"] == "shadow"
        for v, s in continued.items():
            assert max_diff(s["arrays"], ref[v]["arrays"]) <= TOL, (engine, v)
            assert s["manifest"]["steps"] == ref[v]["manifest"]["steps"], (engine, v)


def test_cli_backfill_accounts_for_every_row_and_refuses_to_overwrite(tmp_path):
    lines, _ = generate(ScenarioSpec(tenants=2, windows_per_tenant=1200, seed=5))
    hf.write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out"

    def backfill(start, end=None, source="in.jsonl"):
        cmd = [sys.executable, "-m", "runners.cli", "backfill", "--input",
               str(tmp_path / source), "--from", start, "--output", str(out),
               "--set", "trainer.snapshot_interval=300", "--set", "trainer.batch_size=8",
               "--summary-json", str(tmp_path / "s.json")]
        return subprocess.run(cmd + (["--to", end] if end else []), cwd=REPO,
                              capture_output=True, text=True, timeout=600)

    proc = backfill("2026-11-22T00:02:00Z", "2026-11-22T00:15:00Z")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "[backfill] acme:" in proc.stderr and "windows (100.0%)" in proc.stderr
    assert "TOTAL" in proc.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    totals = summary["totals"]
    assert backfill_job.balanced(totals)
    assert totals["rows"] == len([x for x in lines if x.strip()])
    for key in ("out_of_range", "duplicates", "feedback", "dead_letters", "trained"):
        assert totals[key] > 0, key
    # 13 minutes of one-second windows per tenant, less the ones never labeled
    for tenant, c in summary["tenants"].items():
        assert 13 * 60 - 10 <= c["trained"] + c["unlabeled"] <= 13 * 60, tenant
        assert c["last_version"] == -(-c["trained"] // 300)
    records = read_records(out / "records", "snapshots")
    assert {r["mode"] for r in records} == {"backfill"}

    before = {r["snapshot_id"] for r in read_records(out / "records", "snapshots")}
    # acme and globex overlap what is stored; initech, new, is trained all the same
    three, _ = generate(ScenarioSpec(tenants=3, windows_per_tenant=1200, seed=5))
    hf.write_jsonl(tmp_path / "three.jsonl", three)
    overlapping = backfill("2026-11-22T00:10:00Z", source="three.jsonl")
    assert overlapping.returncode == 2
    assert "cannot continue" in overlapping.stderr
    refused = json.loads((tmp_path / "s.json").read_text())
    assert backfill_job.balanced(refused["totals"])
    assert refused["tenants"]["acme"]["trained"] == refused["tenants"]["globex"]["trained"] == 0
    assert refused["tenants"]["acme"]["refused"] > 0
    assert refused["tenants"]["initech"]["trained"] > 0 == refused["tenants"]["initech"]["refused"]
    assert {r["tenant_id"] for r in read_records(out / "records", "refusals")} == {
        "acme", "globex"}
    assert {r["snapshot_id"] for r in read_records(out / "records", "snapshots")
            if r["tenant_id"] != "initech"} == before
    after = backfill("2026-11-22T00:15:00Z")
    assert after.returncode == 0, after.stderr[-3000:]
    assert "continuing from acme-v" in after.stderr


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_backfill_reads_history_from_an_object_store_and_keeps_its_store_there(scheme, tmp_path):
    """History files and the snapshot store and registry in one object store, through Beam's
    filesystems: S3 (Parquet history) against moto_server, GCS (gzip TFRecord history) against
    fake-gcs-server, each started by the fixture."""
    from tests.core import servers

    lines, _ = generate(ScenarioSpec(tenants=2, windows_per_tenant=600, seed=3))
    windows = hf.windows_of(lines)
    if scheme == "s3":
        hf.write_parquet(tmp_path / "history", windows, files=2)
        server, server_env, suffix = servers.moto_s3, servers.s3_env, "parquet"
    else:
        hf.write_tfrecord(tmp_path / "history" / "w.tfrecord.gz", windows)
        server, server_env, suffix = servers.fake_gcs, servers.gcs_env, "tfrecord.gz"
    with server() as endpoint, servers.env(server_env(endpoint)):
        upload = _s3_upload(endpoint) if scheme == "s3" else _gcs_upload()
        for f in (tmp_path / "history").iterdir():
            upload(f, "history", f"windows/{f.name}")
        beam_args = (f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test",
                     "--s3_secret_access_key=test", "--s3_region_name=us-east-1") \
            if scheme == "s3" else ("--project=upm-test",)
        root = f"{scheme}://models/upm"
        result = backfill_job.run(backfill_job.BackfillOptions(
            inputs=(f"{scheme}://history/windows/*.{suffix}",), start_ms=DEFAULT_START_MS,
            output_dir=str(tmp_path / "out"),
            config=demo_config().with_override(f"snapshots.base_path={root}/snapshots"),
            beam_args=beam_args))
        assert result.input_format == suffix.split(".")[0]
        assert backfill_job.balanced(result.totals) and result.totals["trained"] > 1000
        records = read_records(tmp_path / "out" / "records", "snapshots")
        assert len(records) == sum(c["snapshots"] for c in result.tenants.values()) == 4
        store = open_store(root)
        for rec in records:
            assert rec["uri"].startswith(f"{root}/snapshots/")
            assert store.read_snapshot(rec["uri"], rec["sha256"]).manifest["mode"] == "backfill"
        registry = open_registry(root)
        assert set(registry.tenant("acme")["artifacts"]) == {"acme-v000001", "acme-v000002"}


def _s3_upload(endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("history", "models"):
        s3.create_bucket(Bucket=bucket)
    return lambda path, bucket, key: s3.upload_file(str(path), bucket, key)


def _gcs_upload():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="upm-test", credentials=AnonymousCredentials())
    for bucket in ("history", "models"):
        client.create_bucket(bucket)
    return lambda path, bucket, key: client.bucket(bucket).blob(key).upload_from_filename(
        str(path))


def test_json_lines_tfxio_reads_the_same_window_table_in_process_and_in_beam(tmp_path):
    import gzip

    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from tfx_bsl.public import tfxio

    from transforms.beam.tfxio_sources import JsonLinesTFXIO

    lines, _ = generate(ScenarioSpec(tenants=2, windows_per_tenant=300, seed=9))
    with gzip.open(tmp_path / "w.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n\n")
    source = JsonLinesTFXIO(str(tmp_path / "*.jsonl.gz"), max_features=4096)
    local = pa.Table.from_batches(list(source.RecordBatches(
        tfxio.RecordBatchesOptions(batch_size=100, drop_final_batch=False, shuffle=False))))
    assert local.num_rows == len(lines)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        (p | source.BeamSource(batch_size=64)
         | beam.Map(lambda b: b.to_pylist()) | beam.FlatMap(lambda rows: rows)
         | beam.Map(lambda r: json.dumps(r, sort_keys=True))
         | beam.io.WriteToText(str(tmp_path / "beam"), shard_name_template=""))
    in_beam = sorted((tmp_path / "beam").read_text().splitlines())
    assert in_beam == sorted(json.dumps(r, sort_keys=True) for r in local.to_pylist())
    assert sum(r["error"] is not None for r in local.to_pylist()) > 0  # malformed lines kept
