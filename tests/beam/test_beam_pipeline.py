"""The Beam pipeline on the BundleBasedDirectRunner in streaming mode, fed by TestStreams."""

import json
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from pipelines import beam_job
from pipelines.options import JobOptions
from pipelines.summary import read_records, summarize
from runners.embedded import DEMO_PROFILE, profile_toml
from state.config import UpmConfig
from state.scenario import ScenarioSpec, generate
from tests.core.head_helpers import TENANT, with_a_classifier_tenant

T0 = 1_800_000_000_000
REPO = Path(__file__).resolve().parents[2]


def window(i, tenant="acme", wid=None, label=0.5):
    s = T0 + i * 1000
    return json.dumps({"window_id": wid or f"w{i}", "tenant_id": tenant, "window_start": s,
                       "window_end": s + 1000, "features": {"x": float(i % 7)}, "label": label})


def run_stream(tmp_path, build_stream, config=None, shadow=True):
    opts = JobOptions(inputs=(), output_dir=str(tmp_path), config=config or UpmConfig.from_dict(
        {"trainer": {"batch_size": 1, "snapshot_interval": 1000}}), shadow_deltas=shadow)
    with beam.Pipeline(options=PipelineOptions(streaming=True,
                                               runner="BundleBasedDirectRunner")) as p:
        beam_job.build(p, p | build_stream(), opts)
    return opts.records_dir


def ts(ms):
    return Timestamp(micros=ms * 1000)


def stamped(lines):
    return [beam.window.TimestampedValue(x, ts(json.loads(x)["window_end"])) for x in lines]


def test_the_watermark_does_not_release_held_windows(tmp_path):
    # arrival order 0 2 1, 4, 3, 10, with the watermark pushed a day ahead in between (as one
    # window of another tenant from a wrong clock does): the tenant's own frontier still
    # decides, so 0..4 are released in event-time order
    def stream():
        return (TestStream().add_elements(stamped([window(i) for i in (0, 2, 1)]))
                .advance_watermark_to(ts(T0 + 86_400_000))
                .add_elements(stamped([window(4)]))
                .advance_watermark_to(ts(T0 + 86_400_000 + 1))
                .add_elements(stamped([window(3)]))
                .add_elements(stamped([window(10)])).advance_watermark_to_infinity())
    # The one gap seen is the real one (w4 -> w10), so none of 0..4 was released behind an
    # earlier one; all six were trained.
    assert replay_outcome(run_stream(tmp_path, stream)) == (
        [("w4", "w10")], 6, 0, ["w0", "w1", "w10", "w2", "w3", "w4"])


def test_a_quiet_tenant_releases_what_it_holds(tmp_path):
    # 0 1 3 arrive and are held (the release delay); then no window for longer than
    # replay.quiet_release_ms of processing time: all three are released, so w2, arriving
    # after, is behind them (reordered, trained) and the hole w1 -> w3 was a gap when released
    def stream():
        return (TestStream().add_elements(stamped([window(i) for i in (0, 1, 3)]))
                .advance_processing_time(2e9)  # the TestClock starts at 0; the timer is wall time
                .add_elements(stamped([window(2)])).advance_watermark_to_infinity())
    assert replay_outcome(run_stream(tmp_path, stream)) == (
        [("w1", "w3")], 4, 1, ["w0", "w1", "w2", "w3"])


def replay_outcome(rec):
    """(gaps as (before, after) ids, released, reordered, trained window ids sorted)."""
    gaps = [(g["before_window_id"], g["after_window_id"]) for g in read_records(rec, "gaps")]
    replay = [s for s in read_records(rec, "stats") if s["operator"] == "replay"][0]
    trained = sorted(d["prediction_id"] for d in read_records(rec, "shadow_deltas"))
    return gaps, replay["counters"]["released"], replay["counters"]["reordered"], trained


def test_late_windows_behind_the_frontier_are_flagged_and_duplicates_dropped(tmp_path):
    lines = [window(i) for i in range(100)] + [window(10, wid="straggler")] + [window(50)] * 2
    def stream():
        return (TestStream().add_elements(stamped(lines[:100]))
                .advance_watermark_to(ts(T0 + 95_000))
                .add_elements(stamped(lines[100:]))
                .advance_watermark_to_infinity())
    rec = run_stream(tmp_path, stream)
    late = read_records(rec, "late")
    assert [r["window_id"] for r in late] == ["straggler"] and late[0]["delay_ms"] > 60_000
    assert len(read_records(rec, "duplicates")) == 2
    assert len(read_records(rec, "shadow_deltas")) == 100


def test_drift_quarantine_fires_on_the_timer(tmp_path):
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=1500, seed=4))
    cfg = UpmConfig.from_dict(DEMO_PROFILE)  # the default (relative) drift rule
    def stream():
        return beam_job.test_stream_of(lines, cfg.source.out_of_orderness_ms)
    rec = run_stream(tmp_path, stream, cfg, shadow=False)
    q = [r for r in read_records(rec, "quarantines") if r["event"] == "ai.upm.drift.quarantine"]
    assert [r["tenant_id"] for r in q] == [expected.drift_tenant]
    assert read_records(rec, "drift_scores")
    summary = summarize(rec)
    for tenant, exp in expected.tenants.items():
        for k in ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending"):
            assert summary["tenants"][tenant][k] == exp[k], (tenant, k)


ENGINES = (("beam", sys.executable), ("flink", str(REPO / ".venv-flink/bin/python")))


def upm_run(python, engine, src, out, conf, *extra):
    """`upm run` of one engine in its own runtime; returns its stdout and summary."""
    proc = subprocess.run([python, "-m", "runners.cli", "run", "--engine", engine, "--input",
                           str(src), "--config", str(conf), "--output", str(out), "--quiet",
                           "--summary-json", str(out / "s.json"), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, engine + proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "s.json").read_text())


def snapshot_ids(out):
    return sorted((r["snapshot_id"], r["version"], r["sha256"], r["parent_snapshot_id"])
                  for r in read_records(out / "records", "snapshots"))


def test_the_shared_scenario_agrees_across_flink_and_beam(tmp_path):
    """The scenario files of the Flink tests through both engines: same per-tenant counts,
    snapshot versions and quarantine decisions. (Flink runs in its own runtime, .venv-flink.)
    Plus a tenant with 0/1 labels: `model.head = auto` makes it a classifier on both, and its
    7.5 labels dead letters with the same reason."""
    spec = ScenarioSpec(tenants=3, windows_per_tenant=2000, seed=21)
    lines, expected = generate(spec)
    lines, refused = with_a_classifier_tenant(lines, spec)
    src = tmp_path / "windows.jsonl"
    src.write_text("\n".join(lines) + "\n")
    conf = tmp_path / "upm.toml"
    conf.write_text(profile_toml(DEMO_PROFILE))
    results = {}
    for engine, python in ENGINES:
        out = tmp_path / engine
        stdout, summary = upm_run(python, engine, src, out, conf)
        quarantines = sorted((r["tenant_id"], r["drift_window_id"], r["snapshot_id"])
                             for r in read_records(out / "records", "quarantines")
                             if r["event"] == "ai.upm.drift.quarantine")
        results[engine] = (summary, snapshot_ids(out), quarantines, stdout)
    (sb, snb, qb, _), (sf, snf, qf, _) = results["beam"], results["flink"]
    keys = ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending", "gaps",
            "snapshots", "last_version", "quarantines", "head", "balanced")
    for tenant in [*expected.tenants, TENANT]:
        assert {k: sb["tenants"][tenant][k] for k in keys} == {
            k: sf["tenants"][tenant][k] for k in keys}, tenant
    for tenant, exp in expected.tenants.items():
        assert sb["tenants"][tenant]["trained"] == exp["trained"]
        assert sb["tenants"][tenant]["head"] == "linear"
    classy = sb["tenants"][TENANT]
    assert classy["head"] == "logistic" and classy["dead_letters"] == refused > 5
    assert classy["balanced"] and classy["scores"]["accuracy"] > 0.8
    for out in (tmp_path / "beam", tmp_path / "flink"):
        reasons = [d["reason"] for d in read_records(out / "records", "dead_letters")
                   if d.get("tenant_id") == TENANT]
        assert len(reasons) == refused and all(
            r.startswith("bad_label: label 7.5 is not 0 or 1") for r in reasons), reasons[:3]
    assert {r[0].split("-v")[0] for r in snb} == {*expected.tenants, TENANT}  # all snapshot
    assert snb == snf
    assert [q[0] for q in qb] == [expected.drift_tenant] and qb == qf
    assert all(q[1] and q[2] for q in qb)  # a drift window and the snapshot it quarantined


def test_the_beam_metrics_count_what_the_records_say(tmp_path):
    """The job's Beam metrics (namespace upm, the Flink job's counter names) on the FnApiRunner
    over a bounded input: the local streaming runner drops user metrics after the first bundle
    (pipelines/beam_job.upm_counters)."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from state.parse import parse_message

    lines, _ = generate(ScenarioSpec(tenants=2, windows_per_tenant=1500, seed=4))
    def stamp(raw):
        p = parse_message(raw)
        return beam.window.TimestampedValue(raw, ts(p.record.event_time if p.ok else T0))
    opts = JobOptions(inputs=(), output_dir=str(tmp_path), config=UpmConfig.from_dict(DEMO_PROFILE))
    p = beam.Pipeline(runner=FnApiRunner())
    beam_job.build(p, p | beam.Create(lines) | beam.Map(stamp), opts)
    result = p.run()
    result.wait_until_finish()
    counters = beam_job.upm_counters(result)
    totals = summarize(opts.records_dir)["totals"]
    assert totals["balanced"] and totals["trained"] > 0 and totals["quarantines"] == 1
    for name in ("trained", "duplicates", "late", "gaps", "snapshots", "quarantines",
                 "feedback_in"):
        assert counters.get(name, 0) == totals[name], name
    # every window that reached the tenant step is trained, dropped, late, refused or held
    assert counters["windows_in"] == (totals["trained"] + totals["duplicates"] + totals["late"]
                                      + totals["pending"] + counters.get("dead_letters", 0))


def test_a_warm_start_on_reordered_input_agrees_across_flink_and_beam(tmp_path):
    """A second run into the same store warm-starts each tenant from its newest snapshot before
    the tenant's first *released* window, on both engines (state/tenant.py). Its input starts
    out of order: each tenant's first two windows swapped, the later one arriving first."""
    lines, _ = generate(ScenarioSpec(tenants=2, windows_per_tenant=1600, seed=8,
                                     drift_tenant=None))
    cut = len(lines) // 2
    second = lines[cut:]
    for tenant in ("acme", "globex"):
        at = [i for i, x in enumerate(second) if f'"tenant_id": "{tenant}"' in x
              and '"window_id"' in x][:2]
        second[at[0]], second[at[1]] = second[at[1]], second[at[0]]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(second) + "\n")
    conf = tmp_path / "upm.toml"
    conf.write_text(profile_toml(DEMO_PROFILE))
    results = {}
    for engine, python in ENGINES:
        out = tmp_path / engine
        upm_run(python, engine, tmp_path / "a.jsonl", out, conf)
        first = snapshot_ids(out)
        upm_run(python, engine, tmp_path / "b.jsonl", out, conf, "--fresh")
        results[engine] = (first, snapshot_ids(out))
    assert results["beam"] == results["flink"]
    first, then = results["beam"]
    for tenant in ("acme", "globex"):
        old = [x for x in first if x[0].startswith(tenant)]
        new = [x for x in then if x[0].startswith(tenant)]
        assert old and new and new[0][1] == old[-1][1] + 1 and new[0][3] == old[-1][0]
