"""A tenant with empty state warm-starts from its newest snapshot in the store: a second run on
later data continues the version sequence (and its lineage) instead of starting over."""

import subprocess
import sys

from pipelines.summary import read_records
from runners.embedded import DEMO_PROFILE, profile_toml
from state.scenario import ScenarioSpec, generate


def run(args):
    proc = subprocess.run([sys.executable, "-m", "runners.cli", "run", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_second_run_continues_the_version_sequence(tmp_path):
    lines, _ = generate(ScenarioSpec(tenants=2, windows_per_tenant=1600, seed=8, drift_tenant=None))
    cut = len(lines) // 2
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[cut:]) + "\n")
    conf = tmp_path / "upm.toml"
    conf.write_text(profile_toml(DEMO_PROFILE))
    out = tmp_path / "out"
    run(["--input", str(tmp_path / "a.jsonl"), "--output", str(out), "--config", str(conf), "--quiet"])
    first = read_records(out / "records", "snapshots")
    run(["--input", str(tmp_path / "b.jsonl"), "--output", str(out), "--config", str(conf), "--quiet",
         "--fresh"])  # only the second run's records; the store is kept
    second = read_records(out / "records", "snapshots")
    for tenant in ("acme", "globex"):
        old = sorted((s for s in first if s["tenant_id"] == tenant), key=lambda s: s["version"])
        new = sorted((s for s in second if s["tenant_id"] == tenant), key=lambda s: s["version"])
        assert old and new
        assert new[0]["version"] == old[-1]["version"] + 1
        assert new[0]["parent_snapshot_id"] == old[-1]["snapshot_id"]
