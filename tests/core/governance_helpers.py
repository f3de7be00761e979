"""Builds a real store for governance tests: trained snapshots, written, signed, registered."""

from dataclasses import asdict

import numpy as np

from model.lifecycle.governance import Governance, JsonLinesSink, events_path
from model.network import ModelConfig
from model.lifecycle.policy import DEFAULT_POLICY_TOML, Policy
from model.lifecycle.registry import LocalDocumentStore, Registry
from model.lifecycle.signing import Signer, Verifier
from model.snapshot import encode
from model.lifecycle.store import LocalSnapshotStore
from state.records import FeatureWindow, SnapshotRecord
from state.trainer import TrainerConfig, TrainerState

T0 = 1_800_000_000_000


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def make_snapshots(tenant, n, interval=40, seed=0):
    ts = TrainerState(tenant, ModelConfig(head="mlp", input_width=32, hidden_units=8),
                      TrainerConfig(learning_rate=0.05, batch_size=8, snapshot_interval=interval))
    rng = np.random.default_rng(seed)
    snaps = []
    i = 0
    while len(snaps) < n:
        x = rng.normal(size=3)
        w = FeatureWindow(f"{tenant}-w{i}", tenant, T0 + i * 1000, T0 + i * 1000 + 1000,
                          {"a": x[0], "b": x[1], "c": x[2]}, float(x @ [0.5, -0.2, 0.1]))
        snaps += ts.on_window(w).snapshots
        i += 1
    return snaps


def publish(store, registry, signer, snap, compression="zstd"):
    m = snap.manifest
    enc = encode(snap, compression)
    stored = store.write_snapshot(m["tenant_id"], m["snapshot_id"], enc)
    rec = SnapshotRecord(m["snapshot_id"], m["tenant_id"], m["trainer_id"], m["version"], m["mode"],
                         m["created_at"], m["window_start"], m["window_end"], m["windows_trained"],
                         m["metrics"]["loss"], stored.uri, stored.sha256, stored.size_bytes,
                         stored.format, stored.compression,
                         signer.sign(m["snapshot_id"], stored.sha256) if signer else None,
                         m["parent_snapshot_id"], m["metrics"].get("prequential"),
                         m["metrics"].get("challenge"))
    registry.register(asdict(rec))
    return rec


class World:
    """A store, registry, keys, policy and governance over `n` registered snapshots per tenant."""

    def __init__(self, root, tenants=("acme",), n=4, policy_toml=DEFAULT_POLICY_TOML,
                 allow=("acme",)):
        from model.lifecycle.signing import generate_keypair
        priv, pub = generate_keypair(root / "keys")
        self.signer = Signer.from_pem(priv.read_bytes())
        self.verifier = Verifier.from_pems([pub.read_bytes()])
        self.pub = pub
        self.priv = priv
        self.root = root
        self.clock = Clock()
        self.store = LocalSnapshotStore(root)
        self.registry = Registry(LocalDocumentStore(root), clock=self.clock)
        self.sink = JsonLinesSink(events_path(root))
        self.policy = Policy.from_toml(policy_toml).with_allowlist(allow)
        self.gov = Governance(self.registry, self.store, self.policy, self.verifier, self.sink)
        self.snaps = {}
        for t in tenants:
            self.snaps[t] = make_snapshots(t, n)
            for s in self.snaps[t]:
                publish(self.store, self.registry, self.signer, s)

    def ids(self, tenant="acme"):
        return [s.snapshot_id for s in self.snaps[tenant]]

    def healthy(self, tenant, sid, p95=0.05, samples=5000):
        """Measured drift, and (when an active exists) a comparison with it that `sid` wins."""
        self.registry.record_drift(tenant, sid, p95, samples)
        active = self.registry.pointer(tenant, "active")
        if active and active != sid:
            self.compared(tenant, sid, active, mae=0.10, active_mae=0.11)

    def compared(self, tenant, sid, against, mae, active_mae, n=1000):
        """What the job records as `metrics.challenge` (state/challenge.py) for `sid`."""
        challenge = {"candidate_snapshot_id": sid, "champion_snapshot_id": against,
                     "candidate": {"n": n, "mae": mae, "rmse": mae},
                     "champion": {"n": n, "mae": active_mae, "rmse": active_mae}}
        self.registry.update(lambda d: d["tenants"][tenant]["artifacts"][sid]["metrics"]
                             .update(challenge=challenge))

    def walk_to_active(self, tenant, sid, actor="ops"):
        g = self.gov
        g.promote(tenant, "staging", sid, actor, "new snapshot")
        g.promote(tenant, "shadow", sid, actor, "staging ok")
        self.healthy(tenant, sid)
        self.clock.advance(3601)
        g.promote(tenant, "canary", sid, actor, "shadow soak ok", role="operator")
        self.clock.advance(86401)
        g.promote(tenant, "active", sid, actor, "canary ok", role="operator", ack=True)
