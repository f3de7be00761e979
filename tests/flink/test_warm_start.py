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


def first_run(tmp_path, spec):
    """Run the first half of a generated stream into a store; returns the output directory and
    a function that runs the second half into the same store (only its records kept)."""
    lines, _ = generate(spec)
    cut = len(lines) // 2
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[cut:]) + "\n")
    conf = tmp_path / "upm.toml"
    conf.write_text(profile_toml(DEMO_PROFILE))
    out = tmp_path / "out"
    common = ["--output", str(out), "--config", str(conf), "--quiet"]
    run(["--input", str(tmp_path / "a.jsonl"), *common])
    return out, lambda: run(["--input", str(tmp_path / "b.jsonl"), *common, "--fresh"])


def test_second_run_continues_the_version_sequence(tmp_path):
    out, second_run = first_run(tmp_path, ScenarioSpec(tenants=2, windows_per_tenant=1600, seed=8,
                                                       drift_tenant=None))
    first = read_records(out / "records", "snapshots")
    second_run()
    second = read_records(out / "records", "snapshots")
    for tenant in ("acme", "globex"):
        old = sorted((s for s in first if s["tenant_id"] == tenant), key=lambda s: s["version"])
        new = sorted((s for s in second if s["tenant_id"] == tenant), key=lambda s: s["version"])
        assert old and new
        assert new[0]["version"] == old[-1]["version"] + 1
        assert new[0]["parent_snapshot_id"] == old[-1]["snapshot_id"]


def test_a_run_with_an_active_snapshot_scores_the_candidate_against_it(tmp_path):
    """The job reads the tenant's active snapshot from the registry and records, with each
    snapshot, the candidate and the active scored on the same windows (state/challenge.py)."""
    from model.lifecycle.governance import Governance, JsonLinesSink, events_path
    from model.lifecycle.policy import Policy
    from model.lifecycle.registry import open_registry
    from model.lifecycle.signing import Verifier
    from model.lifecycle.store import open_store

    out, second_run = first_run(tmp_path, ScenarioSpec(tenants=1, windows_per_tenant=2400, seed=9,
                                                       drift_tenant=None))
    store = str(out)  # the store root is the output directory (pipelines/options.py)
    registry = open_registry(store)
    tenant = next(iter(registry.read()["tenants"]))
    newest = max(registry.tenant(tenant)["artifacts"])
    lenient = Policy.from_toml("".join(f"[stage.{s}]\nchecks = []\n"
                                       for s in ("staging", "shadow", "canary", "active")))
    gov = Governance(registry, open_store(store), lenient, Verifier({}),
                     JsonLinesSink(events_path(store)))
    for stage in ("staging", "shadow", "canary", "active"):
        gov.promote(tenant, stage, newest, "test", "champion for the second run")
    second_run()
    second = sorted((s for s in read_records(out / "records", "snapshots")
                     if s["tenant_id"] == tenant), key=lambda s: s["version"])
    challenged = [s for s in second if s.get("challenge")]
    assert challenged, second
    ch = challenged[0]["challenge"]
    assert ch["champion_snapshot_id"] == newest and ch["candidate_snapshot_id"] == \
        challenged[0]["parent_snapshot_id"]
    assert ch["candidate"]["n"] == ch["champion"]["n"] == DEMO_PROFILE["trainer"]["snapshot_interval"]
    entry = registry.tenant(tenant)["artifacts"][ch["candidate_snapshot_id"]]
    assert entry["metrics"]["challenge"] == ch
