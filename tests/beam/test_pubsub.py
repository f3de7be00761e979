"""Pub/Sub end to end against Google's Pub/Sub emulator started by a fixture: publish feature
windows, the Beam pipeline (ReadFromPubSub, BundleBasedDirectRunner, streaming) trains, and
snapshot and quarantine records are read back from topics."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.core.servers import free_port, wait_listening

from runners.embedded import DEMO_PROFILE, profile_toml
from state.config import UpmConfig
from state.parse import parse_message
from state.scenario import ScenarioSpec, generate

EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
PROJECT = "upm-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    assert Path(EMULATOR).exists(), "the Pub/Sub emulator (google-cloud-cli-pubsub-emulator) is missing"
    port = free_port()
    proc = subprocess.Popen([EMULATOR, "--host=127.0.0.1", f"--port={port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    host = f"127.0.0.1:{port}"
    try:
        wait_listening(port, proc, "the Pub/Sub emulator")
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    old = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield host
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        if old is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = old


def test_pubsub_in_records_out(emulator, tmp_path):
    from google.cloud import pubsub_v1

    # Pub/Sub keeps order only per ordering key on an ordered subscription; the tenant id is
    # the key (out of order delivery would turn into late windows).
    pub = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    sub = pubsub_v1.SubscriberClient()
    topic, subscription = pub.topic_path(PROJECT, "windows"), sub.subscription_path(PROJECT, "upm")
    pub.create_topic(name=topic)
    sub.create_subscription(request={"name": subscription, "topic": topic,
                                     "enable_message_ordering": True})
    outs = {}
    for kind in ("dead_letters", "duplicates", "late", "gaps", "snapshots", "drift_scores",
                 "quarantines", "rollbacks", "stats"):
        t = pub.topic_path(PROJECT, f"upm-out-{kind}")
        pub.create_topic(name=t)
        outs[kind] = sub.subscription_path(PROJECT, f"read-{kind}")
        sub.create_subscription(name=outs[kind], topic=t)

    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=1100, seed=4,
                                            drift_at=0.45, malformed_rate=0.0))
    futures = []
    for line in lines:
        p = parse_message(line)
        futures.append(pub.publish(topic, line.encode(), ordering_key=p.record.tenant_id,
                                   event_time=str(p.record.event_time)))
    for f in futures:
        f.result(timeout=60)

    # The DirectRunner reads Pub/Sub slowly (about a dozen messages a second here), so the drift
    # monitor judges after 100 samples instead of the demo's 300 to quarantine within the run.
    # The seeds' absolute rule: this short scenario's change arrives as the drift tenant's first
    # snapshot is cut (window ~500 of 1,100), before any judged history the relative rule could
    # take as its reference (the engine-free run of the same lines raises nothing under it).
    profile = {**DEMO_PROFILE, "drift": {**DEMO_PROFILE["drift"], "sample_size": 100,
                                         "rule": "absolute"}}
    conf = tmp_path / "upm.toml"
    conf.write_text(profile_toml(profile))
    # The pipeline is unbounded: run it until the records the test waits for have arrived
    # (or a generous deadline passes), then stop it, as an operator would.
    proc = subprocess.Popen(
        [sys.executable, "-m", "runners.cli", "run", "--engine", "beam", "--pubsub-subscription",
         subscription, "--pubsub-output-prefix", pub.topic_path(PROJECT, "upm-out"),
         "--config", str(conf), "--output", str(tmp_path / "out"), "--quiet"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "pipeline.log", "w"),
        env={**os.environ, "PUBSUB_EMULATOR_HOST": emulator})

    def pull(name):
        got = []
        while True:
            resp = sub.pull(subscription=name, max_messages=500, timeout=10)
            if not resp.received_messages:
                return got
            got += [json.loads(m.message.data) for m in resp.received_messages]
            sub.acknowledge(subscription=name, ack_ids=[m.ack_id for m in resp.received_messages])

    snaps, quarantines = [], []
    deadline = time.time() + 900
    try:
        while time.time() < deadline and proc.poll() is None:
            snaps += pull(outs["snapshots"])
            quarantines += [q for q in pull(outs["quarantines"])
                            if q["event"] == "ai.upm.drift.quarantine"]
            if quarantines and {s["tenant_id"] for s in snaps} == set(expected.tenants):
                break
            time.sleep(3)
        assert proc.poll() is None, (tmp_path / "pipeline.log").read_text()[-3000:]
        assert quarantines and {s["tenant_id"] for s in snaps} == set(expected.tenants), (
            "the records did not arrive in 900 s", len(snaps), quarantines)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    assert {s["tenant_id"] for s in snaps} == set(expected.tenants)
    assert all(s["event"] == "ai.upm.snapshot.created" and s["sha256"] for s in snaps)
    assert [q["tenant_id"] for q in quarantines] == [expected.drift_tenant]
    # nothing was promoted, so the quarantine rolled no stage back (the Beam job's rollbacks
    # are tested in tests/beam/test_beam_rollback.py)
    assert pull(outs["rollbacks"]) == []
    # Ordered delivery: every window judged late is one the reference run judges late too (a
    # straggler of the scenario), none is an artefact of Pub/Sub redelivery or reordering.
    from pipelines.local_job import run_local
    reference = run_local(lines, UpmConfig.from_dict(profile))
    truly_late = {w.window_id for t in reference.tenants.values() for w in t.late_windows}
    late = [json.loads(x) for f in (tmp_path / "out" / "records" / "late").glob("*.jsonl")
            for x in f.read_text().splitlines()]
    assert late and {r["window_id"] for r in late} <= truly_late
