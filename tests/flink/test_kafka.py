"""Kafka end to end against a real Kafka-protocol broker (noida-db) started by a fixture:
produce windows (with duplicates, late and malformed messages), run the job reading the topic,
and read snapshot, quarantine and dead-letter records back with a read_committed consumer."""

import json
import subprocess
import sys
import time

import pytest

from tests.core.servers import kafka_broker
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from runners.embedded import DEMO_PROFILE, profile_toml
from state.scenario import ScenarioSpec, generate

KINDS = ("snapshots", "quarantines", "dead_letters", "duplicates", "late")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with kafka_broker(tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


def create_topics(bootstrap, names, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1, config={"retention.ms": "-1"})
                                   for n in names])
    for f in futures.values():
        f.result(timeout=30)


def consume_all(bootstrap, topic, timeout_s=300):
    """Every committed record of `topic` (read_committed), read to the end offset of each of
    its partitions as the broker reports it now; the job that wrote them has ended."""
    from confluent_kafka import TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.time()}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.auto.commit": False, "session.timeout.ms": 6000})
    try:
        meta = c.list_topics(topic, timeout=30).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=30, cached=False)[1]
                for tp in parts}
        c.assign(parts)
        out, deadline = [], time.time() + timeout_s
        while True:
            pos = {tp.partition: tp.offset for tp in c.position(parts)}
            if all(pos[p] >= end for p, end in ends.items() if end > 0):
                return out
            if time.time() > deadline:
                raise AssertionError(f"{topic}: read to {pos}, end offsets {ends}")
            m = c.poll(0.5)
            if m is not None and not m.error():
                out.append(json.loads(m.value()))
    finally:
        c.close()


def produce_lines(bootstrap, topic, lines, partition=None, timestamps=None):
    """Each line a message keyed by its tenant (so a tenant's order is kept in one partition),
    or all into `partition`; with `timestamps`, each message's Kafka timestamp (CreateTime)."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
            key = obj.get("tenant_id") if isinstance(obj, dict) else None
        except ValueError:
            key = None
        where = {} if partition is None else {"partition": partition}
        if timestamps is not None:
            where["timestamp"] = timestamps[i]
        p.produce(topic, value=line.encode(), key=key.encode() if isinstance(key, str) else None,
                  **where)
    assert p.flush(60) == 0, "messages left unsent"


def test_kafka_in_and_out_exactly_once(broker, tmp_path):
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=2000, seed=13))
    create_topics(broker, ["upm.windows"], partitions=2)
    create_topics(broker, [f"upm.out.{k}" for k in (*KINDS, "drift_scores", "gaps", "stats",
                                                    "rollbacks")])
    produce_lines(broker, "upm.windows", lines)
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
