"""Kafka end to end against a real Kafka-protocol broker (noida-db) started by a fixture:
produce windows (with duplicates, late and malformed messages), run the job reading the topic,
and read snapshot, quarantine and dead-letter records back with a read_committed consumer."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.core.servers import free_port
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from runners.embedded import DEMO_PROFILE, profile_toml
from state.scenario import ScenarioSpec, generate

KINDS = ("snapshots", "quarantines", "dead_letters", "duplicates", "late")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    binary = shutil.which("noida-db", path=str(sys.prefix) + "/bin")
    assert binary, "noida-db (dev extra) is not installed"
    port = free_port()
    data = tmp_path_factory.mktemp("kafka")
    proc = subprocess.Popen([binary, "start", "--host", "127.0.0.1", "--only", "kafka",
                             "--kafka-port", str(port), "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield bootstrap
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def create_topics(bootstrap, names, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1, config={"retention.ms": "-1"})
                                   for n in names])
    for f in futures.values():
        f.result(timeout=30)


def consume_all(bootstrap, topic, quiet_s=4.0, timeout_s=60):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.time()}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "session.timeout.ms": 6000})
    c.subscribe([topic])
    out, last, start = [], time.time(), time.time()
    while time.time() - last < quiet_s and time.time() - start < timeout_s:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(json.loads(m.value()))
            last = time.time()
    c.close()
    return out


def test_kafka_in_and_out_exactly_once(broker, tmp_path):
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=2000, seed=13))
    create_topics(broker, ["upm.windows"], partitions=2)
    create_topics(broker, [f"upm.out.{k}" for k in (*KINDS, "drift_scores", "gaps", "stats",
                                                    "rollbacks")])
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
    for line in lines:
        try:
            key = json.loads(line).get("tenant_id")
        except ValueError:
            key = None
        p.produce("upm.windows", value=line.encode(),
                  key=key.encode() if isinstance(key, str) else None)
    p.flush(30)
    conf = tmp_path / "upm.toml"
    conf.write_text(profile_toml(DEMO_PROFILE))
    proc = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", "--kafka-bootstrap", broker,
         "--kafka-topic", "upm.windows", "--kafka-bounded", "--kafka-output-prefix", "upm.out",
         "--output", str(tmp_path / "out"), "--config", str(conf), "--quiet",
         "--summary-json", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = {k: consume_all(broker, f"upm.out.{k}") for k in KINDS}
    tot = expected.totals()
    assert len(got["dead_letters"]) == tot["dead_letters"]
    assert len(got["duplicates"]) == tot["duplicates"]
    assert len(got["late"]) == tot["late"]
    snaps = got["snapshots"]
    assert len({s["snapshot_id"] for s in snaps}) == len(snaps) == sum(
        t["trained"] // 500 for t in expected.tenants.values())
    q = [r for r in got["quarantines"] if r["event"] == "ai.upm.drift.quarantine"]
    assert [r["tenant_id"] for r in q] == [expected.drift_tenant]
    summary = json.loads((tmp_path / "s.json").read_text())
    for tenant, exp in expected.tenants.items():
        for k in ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending"):
            assert summary["tenants"][tenant][k] == exp[k], (tenant, k)
