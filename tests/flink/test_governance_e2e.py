"""End to end: `upm run` (embedded default, signed snapshots), then promote one tenant to
active through the CLI, load it in an adapter, and get predictions and embeddings from it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.lifecycle.adapter import Adapter
from model.network import ModelConfig
from model.lifecycle.registry import LocalDocumentStore, Registry
from model.lifecycle.signing import Verifier, generate_keypair
from model.lifecycle.store import LocalSnapshotStore
from tests.core.rollback_scenario import assert_rolled_back, quarantine_rolls_back

POLICY = """
[stage.staging]
checks = ["sha256", "signature"]
[stage.shadow]
checks = ["order", "sha256", "signature"]
[stage.canary]
checks = ["order", "sha256", "signature", "drift", "soak", "allowlist", "role"]
min_soak_ms = 0
roles = ["operator"]
[stage.active]
checks = ["order", "sha256", "signature", "drift", "soak", "role", "ack"]
min_soak_ms = 0
roles = ["operator"]
[drift]
max_p95 = 0.2
min_samples = 300
"""


def upm(*args, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "runners.cli", *args], capture_output=True,
                          text=True, timeout=600, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_run_promote_adapt_predict(tmp_path):
    priv, pub = generate_keypair(tmp_path / "keys")
    env = dict(os.environ, UPM_SIGNING_KEY_FILE=str(priv), UPM_VERIFY_KEY_FILES=str(pub))
    store = tmp_path / "upm-data"
    upm("run", "--output", str(store), "--tenants", "2", "--windows-per-tenant", "2000",
        "--quiet", env=env)
    (tmp_path / "policy.toml").write_text(POLICY)
    (tmp_path / "upm.toml").write_text('[features]\nunified_model = ["globex"]\n')
    listing = upm("registry", "list", "--store", str(store), env=env).stdout
    assert "globex-v000003" in listing and "acme-v000002" in listing and "quarantined" in listing
    # the head model.head = auto chose for each tenant (the demo's labels are numbers)
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert rows and all(r[4] == "linear" for r in rows), listing
    assert "0 bad" in upm("registry", "verify", "--store", str(store), env=env).stdout

    common = ["--store", str(store), "--tenant", "globex", "--actor", "alice", "--policy",
              str(tmp_path / "policy.toml"), "--config", str(tmp_path / "upm.toml")]
    upm("promote", *common, "--to", "staging", "--snapshot", "globex-v000002",
        "--reason", "nightly", env=env)
    upm("promote", *common, "--to", "shadow", "--reason", "staging ok", env=env)
    refused = upm("promote", *common, "--to", "canary", "--reason", "no role", env=env,
                  check=False)
    assert refused.returncode == 1 and "[role]" in refused.stderr
    upm("promote", *common, "--to", "canary", "--role", "operator", "--reason", "soak ok",
        env=env)
    no_ack = upm("promote", *common, "--to", "active", "--role", "operator", "--reason", "go",
                 env=env, check=False)
    assert no_ack.returncode == 1 and "[ack]" in no_ack.stderr
    upm("promote", *common, "--to", "active", "--role", "operator", "--ack", "--reason", "go",
        env=env)

    registry = Registry(LocalDocumentStore(store))
    assert registry.pointer("globex", "active") == "globex-v000002"
    adapter = Adapter(registry, LocalSnapshotStore(store),
                      Verifier.from_pems([pub.read_bytes()]), "globex", "active", "agent-e2e",
                      env={})
    assert adapter.sync().status == "adopted"
    rows = [json.loads(line)["features"] for line in
            (store / "input" / "generated.jsonl").read_text().splitlines()[:50]
            if '"tenant_id": "globex"' in line and '"features"' in line][:5]
    pred, emb = adapter.predict(rows), adapter.embed(rows)
    assert pred.shape == (len(rows),) and np.isfinite(pred).all()
    assert emb.shape == (len(rows), ModelConfig().input_width)  # a linear head's embedding

    history = upm("registry", "history", "--store", str(store), "--tenant", "globex",
                  env=env).stdout
    assert history.count("promote") == 4 and "alice" in history
    events = [json.loads(x) for x in (store / "events" / "governance.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in events if e["event"] == "ai.upm.snapshot.activated"] == [
        "staging", "shadow", "canary", "active"]
    status = upm("status", "--store", str(store), "--plot", str(tmp_path / "s.png"), env=env)
    assert "agent-e2e" in status.stdout and (tmp_path / "s.png").stat().st_size > 10_000
    assert "prequential mae by version" in status.stdout

    # A flipped byte in a stored artifact: verify fails loudly.
    path = store / registry.artifact("globex", "globex-v000001")["uri"]  # relative to the store
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01
    path.write_bytes(bytes(data))
    bad = upm("registry", "verify", "--store", str(store), env=env, check=False)
    assert bad.returncode == 1 and "SHA256 MISMATCH" in bad.stdout


@pytest.mark.parametrize("rule", ["relative", "absolute"])
def test_quarantine_rolls_back_canary_and_active_and_the_tenant_recovers(tmp_path, rule):
    """On the Flink job (tests/core/rollback_scenario.py): the quarantine of vN moves canary
    and active back to v(N-1), under the default rule and the seeds' absolute one."""
    events = assert_rolled_back(quarantine_rolls_back(tmp_path, "flink", rule))
    recovered = events[[e["event"] for e in events].index("upm.drift.recovered")]
    assert recovered["rule"] == rule
    if rule == "absolute":
        assert recovered["drift_p95"] <= 0.2 * 0.8
