import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model.lifecycle.governance import GovernanceError, PromotionRefused
from model.lifecycle.policy import DEFAULT_POLICY_TOML, Policy, PolicyError
from model.lifecycle.signing import Signer, SignatureError, generate_keypair
from tests.core.governance_helpers import World


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_stage_walk_with_the_default_policy(world):
    sid = world.ids()[0]
    world.walk_to_active("acme", sid)
    t = world.registry.tenant("acme")
    assert t["stages"] == {"staging": sid, "shadow": sid, "canary": sid, "active": sid}
    promotes = [h for h in t["history"] if h["action"] == "promote"]
    assert [(h["from_stage"], h["to_stage"]) for h in promotes] == [
        (None, "staging"), ("staging", "shadow"), ("shadow", "canary"), ("canary", "active")]
    events = world.sink.read()
    assert [e["event"] for e in events].count("ai.upm.snapshot.activated") == 4
    assert [e["event"] for e in events].count("fl.artifact.promoted") == 4
    act = [e for e in events if e["event"] == "ai.upm.snapshot.activated"][-1]
    assert act["stage"] == "active" and act["snapshot_id"] == sid and act["actor"] == "ops"
    # idempotent: repeating changes nothing and emits nothing
    gen = world.registry.read()["generation"]
    assert world.gov.promote("acme", "active", sid, "ops", "again", role="operator", ack=True) is None
    assert world.registry.read()["generation"] == gen and len(world.sink.read()) == len(events)


def _to_canary_ready(world, sid):
    world.gov.promote("acme", "staging", sid, "ops", "r")
    world.gov.promote("acme", "shadow", sid, "ops", "r")
    world.healthy("acme", sid)
    world.clock.advance(3601)


def _refused(world, stage, sid, rule, **kw):
    before = world.registry.read()
    kw.setdefault("role", "operator")
    with pytest.raises(PromotionRefused) as e:
        world.gov.promote("acme", stage, sid, "ops", "try", **kw)
    assert [f.rule for f in e.value.failures] == [rule], e.value
    assert world.registry.read() == before  # nothing changed
    return str(e.value)


def test_bad_hash_is_refused(world):
    sid = world.ids()[0]
    path = world.store.path_of(world.registry.artifact("acme", sid)["uri"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert "stored bytes hash to" in _refused(world, "staging", sid, "sha256")


def test_bad_signature_is_refused(world, tmp_path):
    sid = world.ids()[0]
    other_priv, _ = generate_keypair(tmp_path / "other")
    doc_sig = Signer.from_pem(other_priv.read_bytes()).sign(sid, world.registry.artifact("acme", sid)["sha256"])
    world.registry.update(lambda d: d["tenants"]["acme"]["artifacts"][sid].update(signature=doc_sig))
    assert "unknown key" in _refused(world, "staging", sid, "signature")
    assert world.registry.tenant("acme")["stages"]["staging"] is None
    art = world.registry.artifact("acme", sid)  # the signature was the only thing changed:
    assert hashlib.sha256(world.store.get_bytes(art["uri"])).hexdigest() == art["sha256"]


def test_unsigned_artifact_is_refused(tmp_path):
    w = World(tmp_path, n=1)
    sid = w.ids()[0]
    w.registry.update(lambda d: d["tenants"]["acme"]["artifacts"][sid].update(signature=None))
    assert "unsigned" in _refused(w, "staging", sid, "signature")


def test_drift_over_an_absolute_ceiling_is_refused_when_the_policy_sets_one(tmp_path):
    # the default policy has no ceiling: a classifier's p95 of |p - y| is often 0.35 and healthy
    w = World(tmp_path)
    sid = w.ids()[0]
    _to_canary_ready(w, sid)
    w.healthy("acme", sid, p95=0.35, samples=5000)
    w.gov.promote("acme", "canary", sid, "ops", "healthy classifier", role="operator")
    assert w.registry.tenant("acme")["stages"]["canary"] == sid
    ceiling = DEFAULT_POLICY_TOML.replace("[drift]\n", "[drift]\nmax_p95 = 0.2\n")
    w = World(tmp_path / "ceiling", policy_toml=ceiling)
    sid = w.ids()[0]
    _to_canary_ready(w, sid)
    w.healthy("acme", sid, p95=0.35, samples=5000)
    assert "drift p95 0.35" in _refused(w, "canary", sid, "drift")


def test_too_few_samples_is_refused(world):
    sid = world.ids()[0]
    _to_canary_ready(world, sid)
    world.healthy("acme", sid, p95=0.05, samples=999)
    assert "999 drift samples" in _refused(world, "canary", sid, "drift")


def test_soak_too_short_is_refused(world):
    sid = world.ids()[0]
    world.gov.promote("acme", "staging", sid, "ops", "r")
    world.gov.promote("acme", "shadow", sid, "ops", "r")
    world.healthy("acme", sid)
    world.clock.advance(60)
    assert "in shadow" in _refused(world, "canary", sid, "soak")


def test_tenant_not_in_canary_allowlist_is_refused(tmp_path):
    w = World(tmp_path, tenants=("globex",), allow=())
    sid = w.ids("globex")[0]
    w.gov.promote("globex", "staging", sid, "ops", "r")
    w.gov.promote("globex", "shadow", sid, "ops", "r")
    w.healthy("globex", sid)
    w.clock.advance(3601)
    before = w.registry.read()
    with pytest.raises(PromotionRefused) as e:
        w.gov.promote("globex", "canary", sid, "ops", "r", role="operator")
    assert [f.rule for f in e.value.failures] == ["allowlist"] and "unified_model" in str(e.value)
    assert w.registry.read() == before


def test_missing_role_is_refused(world):
    sid = world.ids()[0]
    _to_canary_ready(world, sid)
    assert "role None" in _refused(world, "canary", sid, "role", role=None)


def test_missing_ack_is_refused(world):
    sid = world.ids()[0]
    _to_canary_ready(world, sid)
    world.gov.promote("acme", "canary", sid, "ops", "r", role="operator")
    world.clock.advance(86401)
    assert "--ack" in _refused(world, "active", sid, "ack", ack=False)


def test_order_is_enforced(world):
    a, b = world.ids()[:2]
    world.gov.promote("acme", "staging", a, "ops", "r")
    assert "is not in staging" in _refused(world, "shadow", b, "order")


def test_every_failed_rule_is_listed_together(world):
    sid = world.ids()[0]
    with pytest.raises(PromotionRefused) as e:
        world.gov.promote("acme", "active", sid, "intruder", "r", role="guest", ack=False)
    assert {f.rule for f in e.value.failures} >= {"order", "drift", "soak", "role", "ack"}


def test_policy_file_errors_name_the_problem():
    with pytest.raises(PolicyError, match="unknown check 'vibes'"):
        Policy.from_toml('[stage.active]\nchecks = ["vibes"]\n')
    with pytest.raises(PolicyError, match="unknown stage"):
        Policy.from_toml('[stage.prod]\nchecks = []\n')
    assert Policy.from_toml(DEFAULT_POLICY_TOML).rule("active").checks[-1] == "ack"


def test_rollback_to_previous_known_good(world):
    a, b = world.ids()[:2]
    world.walk_to_active("acme", a)
    world.walk_to_active("acme", b)
    ev = world.gov.rollback("acme", "active", "ops", "bad canary metrics", from_artifact=b)
    assert (ev["from_snapshot_id"], ev["to_snapshot_id"]) == (b, a)
    assert world.registry.pointer("acme", "active") == a
    assert world.gov.rollback("acme", "active", "ops", "again", from_artifact=b) is None  # idempotent
    assert [e["event"] for e in world.sink.read()].count("ai.upm.rollback") == 1
    with pytest.raises(GovernanceError, match="no known-good"):
        world.gov.rollback("acme", "active", "ops", "nothing left")


def test_quarantine_of_the_active_artifact_rolls_back_automatically(world):
    a, b = world.ids()[:2]
    world.walk_to_active("acme", a)
    world.walk_to_active("acme", b)
    rec = {"event": "ai.upm.drift.quarantine", "tenant_id": "acme", "trainer_id": "acme-trainer",
           "drift_window_id": "acme/0-1", "drift_p95": 0.6, "threshold": 0.2, "sample_count": 1500,
           "recommendation": "rollback", "snapshot_id": b, "quarantined_at": 1}
    events = world.gov.on_quarantine(rec)
    assert {(e["stage"], e["from_snapshot_id"], e["to_snapshot_id"]) for e in events} == {
        ("canary", b, a), ("active", b, a)}
    t = world.registry.tenant("acme")
    assert t["stages"]["active"] == a and t["stages"]["canary"] == a
    assert t["quarantine"] is None  # cleared by the rollback
    assert t["artifacts"][b]["quarantined"]
    assert world.gov.on_quarantine(rec) == []  # a repeated record changes no pointer


def test_quarantine_of_an_unpromoted_snapshot_only_records_it(world):
    a, b = world.ids()[:2]
    world.walk_to_active("acme", a)
    rec = {"event": "ai.upm.drift.quarantine", "tenant_id": "acme", "trainer_id": "t",
           "drift_window_id": "acme/0-1", "drift_p95": 0.6, "threshold": 0.2, "sample_count": 1500,
           "recommendation": "rollback", "snapshot_id": b, "quarantined_at": 1}
    assert world.gov.on_quarantine(rec) == []
    t = world.registry.tenant("acme")
    assert t["stages"]["active"] == a and t["quarantine"]["snapshot_id"] == b
    for stage in ("staging", "shadow", "canary", "active"):  # refused at every stage
        with pytest.raises(PromotionRefused, match="quarantined"):
            world.gov.promote("acme", stage, b, "ops", "r", role="operator", ack=True)
    assert world.registry.tenant("acme")["stages"] == {
        "staging": a, "shadow": a, "canary": a, "active": a}


CONCURRENT = textwrap.dedent("""
    import sys
    from tests.core.governance_helpers import make_snapshots, publish
    from model.lifecycle.registry import LocalDocumentStore, Registry
    from model.lifecycle.store import LocalSnapshotStore
    from model.lifecycle.governance import Governance, JsonLinesSink
    from model.lifecycle.policy import Policy
    from model.lifecycle.signing import Verifier
    from tests.core.collide import FirstReadBarrier
    root, who = sys.argv[1], sys.argv[2]
    store = LocalSnapshotStore(root)
    reg = Registry(FirstReadBarrier(LocalDocumentStore(root), root + "/go", who))
    pol = Policy.from_toml('[stage.staging]\\nchecks = ["sha256"]\\n')
    gov = Governance(reg, store, pol, Verifier({}), JsonLinesSink(root + "/events.jsonl"))
    for s in make_snapshots("acme-" + who, 12, interval=8, seed=int(who)):
        publish(store, reg, None, s)
        gov.promote("acme-" + who, "staging", s.snapshot_id, "proc" + who, "walk")
    print("conflicts", reg.conflicts)
""")


@pytest.mark.parametrize("round_", range(4))
def test_two_processes_promoting_concurrently_lose_no_update(tmp_path, round_):
    script = tmp_path / "worker.py"
    script.write_text(CONCURRENT)
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), w], cwd=root,
                              env={"PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3",
                                   "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, text=True)
             for w in ("1", "2")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum(int(o.split("conflicts")[-1]) for o in outs) >= 1, outs  # they did collide
    doc = json.loads((tmp_path / "registry" / "models.json").read_text())
    for w in ("1", "2"):
        t = doc["tenants"][f"acme-{w}"]
        assert len(t["artifacts"]) == 12
        acts = [h["action"] for h in t["history"]]
        assert acts.count("register") == 12 and acts.count("promote") == 12
        assert t["stages"]["staging"] == f"acme-{w}-v000012"
    assert doc["generation"] == 48  # every single update landed exactly once


def test_signature_binds_name_and_bytes(tmp_path):
    priv, pub = generate_keypair(tmp_path)
    from model.lifecycle.signing import Verifier
    s, v = Signer.from_pem(priv.read_bytes()), Verifier.from_pems([pub.read_bytes()])
    sig = s.sign("acme-v000001", "ab" * 32)
    assert v.verify("acme-v000001", "ab" * 32, sig) == s.key_id
    for sid, sha in (("acme-v000002", "ab" * 32), ("acme-v000001", "cd" * 32)):
        with pytest.raises(SignatureError):
            v.verify(sid, sha, sig)
    env = {"UPM_SIGNING_KEY_FILE": str(priv), "UPM_VERIFY_KEY_FILES": str(pub)}
    assert Signer.from_env(env).key_id == s.key_id and s.key_id in Verifier.from_env(env).keys
