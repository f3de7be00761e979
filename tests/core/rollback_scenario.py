"""The automatic rollback end to end, on either engine (`upm run --engine flink|beam`, run by
this interpreter): a first run learns acme's old concept (v1..vN); v(N-1) then vN are walked to
the stages the policy rolls back; a second run, warm-started from vN, meets the new concept,
quarantines vN, and its Governor moves every such stage back to v(N-1) (one `ai.upm.rollback`
per stage on the rollbacks sink); once the model has learned the new concept the episode ends.

Under the relative rule (the default) a tenant's drift is judged against its own level, so the
first run stops a while before the change and the second run begins with the rest of the old
concept: the level it settles on is the reference the change is judged against. (Warm start
takes a snapshot only if it covers nothing after the run's first window, so the second run
cannot start with windows the first one saw.)"""

import json
import os
import subprocess
import sys

from model.lifecycle.registry import STAGES, LocalDocumentStore, Registry
from pipelines.summary import read_records
from runners.embedded import DEMO_PROFILE, profile_toml
from state.records import rfc3339_to_ms
from state.scenario import ScenarioSpec, generate

POLICY = """
[stage.staging]
checks = ["sha256"]
[stage.shadow]
checks = ["order", "sha256"]
[stage.canary]
checks = ["order", "sha256"]
[stage.active]
checks = ["order", "sha256"]
[quarantine]
auto_rollback = ["canary", "active"]
"""
# event time of the old concept the second run sees first (relative rule): two drift windows of
# the demo profile, the judged one and the reference before it, and one more
REFERENCE_MS = 3 * DEMO_PROFILE["drift"]["window_duration_ms"]


def upm(*args, env):
    proc = subprocess.run([sys.executable, "-m", "runners.cli", *args], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def quarantine_rolls_back(tmp_path, engine: str, rule: str, stages=("canary", "active")):
    """Run the scenario; return (rollback records, quarantine records, registry, v(N-1), vN)."""
    spec = ScenarioSpec(tenants=1, windows_per_tenant=7000, drift_at=0.5, late_rate=0.0,
                        unlabeled_rate=0.0, malformed_rate=0.0, seed=3)
    lines, _ = generate(spec)
    change_ms = spec.start_ms + int(spec.windows_per_tenant * spec.drift_at) * spec.cadence_ms
    ends = [rfc3339_to_ms(json.loads(x)["window_end"]) for x in lines]
    before = REFERENCE_MS if rule == "relative" else 0
    cut = next(i for i, end in enumerate(ends) if end > change_ms - before)
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines[cut:]) + "\n")
    (tmp_path / "upm.toml").write_text(profile_toml(DEMO_PROFILE))
    (tmp_path / "policy.toml").write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if k != "UPM_SIGNING_KEY_FILE"}
    store = tmp_path / "store"
    job = ["--engine", engine, "--output", str(store), "--config", str(tmp_path / "upm.toml"),
           "--quiet", "--policy", str(tmp_path / "policy.toml"), "--set", f"drift.rule={rule}"]
    upm("run", "--input", str(tmp_path / "a.jsonl"), *job, env=env)
    assert not read_records(store / "records", "quarantines"), "the old concept is learned"
    registry = Registry(LocalDocumentStore(store))
    newest = max(registry.tenant("acme")["artifacts"])  # what the second run warm-starts from
    previous = f"acme-v{int(newest.rsplit('v', 1)[1]) - 1:06d}"
    common = ["--store", str(store), "--tenant", "acme", "--actor", "alice", "--reason", "t",
              "--policy", str(tmp_path / "policy.toml")]
    walk = STAGES[:max(STAGES.index(s) for s in stages) + 1]  # up to the highest of them
    for sid in (previous, newest):
        for stage in walk:
            upm("promote", *common, "--to", stage, "--snapshot", sid, env=env)
    assert all(registry.pointer("acme", s) == newest for s in stages)

    # no new snapshot in the second run: the drifting predictions are vN's
    upm("run", "--input", str(tmp_path / "b.jsonl"), *job, "--fresh",
        "--set", "trainer.snapshot_interval=100000", env=env)
    return (read_records(store / "records", "rollbacks"),
            read_records(store / "records", "quarantines"), registry, previous, newest)


def assert_rolled_back(result, stages=("canary", "active")):
    rollbacks, events, registry, previous, newest = result
    # in event time (a sink's files need not list them in order)
    events = sorted(events, key=lambda e: e.get("quarantined_at") or e.get("recovered_at"))
    kinds = [e["event"] for e in events]
    assert kinds[:1] == ["ai.upm.drift.quarantine"] and "upm.drift.recovered" in kinds, kinds
    assert events[0]["snapshot_id"] == newest
    assert sorted((r["event"], r["stage"], r["from_snapshot_id"], r["to_snapshot_id"])
                  for r in rollbacks) == sorted(
        ("ai.upm.rollback", s, newest, previous) for s in stages)
    assert all(registry.pointer("acme", s) == previous for s in stages)
    assert registry.artifact("acme", newest)["quarantined"]
    return events
