"""Freshness: how long after the last window of a snapshot arrives is that snapshot registered
(the seeds' canary SLO is 10 s; issue 11 asks for p99 <= 5 s at a steady rate).

    .venv-flink/bin/python bench/freshness.py [--rate 1000] [--seconds 60]

A real Kafka-protocol broker (noida-db, the dev extra) and the job as a user runs it
(`upm run --kafka-topic ...`, unbounded, embedded mini-cluster, parallelism 1). The bench first
sends a warm-up prefix and waits for the first snapshot (JVM, Python workers and TensorFlow
tracing out of the way), then produces the rest of a 4-tenant stream at `--rate` messages per
second, paced by wall time, noting when each message was handed to the producer (linger 0).

For each snapshot registered from the paced part: freshness = its `registered_at` in the
registry - the arrival of the newest window it covers (the window whose `window_end` is the
snapshot's; its label's feedback message, if that came later). Prints p50 / p99 / max.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import write_results  # noqa: E402  (bench/, the script's directory)

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from runners.embedded import DEMO_PROFILE, DEMO_SCENARIO, profile_toml  # noqa: E402
from state.records import rfc3339_to_ms  # noqa: E402
from state.scenario import generate  # noqa: E402
from model.lifecycle.registry import open_registry  # noqa: E402
from tests.core.servers import kafka_broker  # noqa: E402

TOPIC = "upm.windows"


def artifacts(store: Path) -> dict:
    """{snapshot_id: (tenant, window_end ms, registered_at ms)} of the store's registry."""
    try:
        views = open_registry(str(store)).views()
    except ValueError:  # being replaced
        return {}
    return {a.id: (t, a.window_end, a.registered_at)
            for t, view in views.items() for a in view.artifacts()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the paced part")
    ap.add_argument("--warm-up", type=int, default=4000, help="messages sent before pacing")
    args = ap.parse_args()
    spec = dataclasses.replace(DEMO_SCENARIO, drift_tenant=None, windows_per_tenant=int(
        (args.warm_up + args.rate * args.seconds) / DEMO_SCENARIO.tenants / 1.07) + 1)
    lines, _ = generate(spec)
    keyed = []
    for line in lines:
        try:
            d = json.loads(line)
            keyed.append((line, d.get("tenant_id"), d.get("window_id"), d.get("window_end")))
        except (ValueError, AttributeError):
            keyed.append((line, None, None, None))
    with tempfile.TemporaryDirectory() as tmp, kafka_broker(Path(tmp) / "kafka") as bootstrap:
        root = Path(tmp)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            f.result(timeout=30)
        conf = root / "upm.toml"
        conf.write_text(profile_toml(DEMO_PROFILE))
        out = root / "out"
        job = subprocess.Popen(
            [sys.executable, "-m", "runners.cli", "run", "--kafka-bootstrap", bootstrap,
             "--kafka-topic", TOPIC, "--output", str(out), "--config", str(conf), "--quiet"],
            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
            stderr=open(root / "job.log", "w"), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        sent: dict[tuple[str, str], float] = {}  # (tenant, window id) -> last arrival, ms
        end_of: dict[tuple[str, int], str] = {}  # (tenant, window_end ms) -> window id
        warm = args.warm_up
        try:
            for line, *_ in keyed[:warm]:
                producer.produce(TOPIC, line.encode())
            producer.flush(60)
            deadline = time.time() + 600
            while not artifacts(out):
                if job.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"the job made no snapshot:\n{(root / 'job.log').read_text()[-3000:]}")
                time.sleep(0.5)
            paced_from = time.time() * 1000
            t0 = time.perf_counter()
            for i, (line, tenant, wid, wend) in enumerate(keyed[warm:]):
                due = t0 + i / args.rate
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.01))
                producer.produce(TOPIC, line.encode())
                producer.poll(0)
                if isinstance(tenant, str) and isinstance(wid, str):
                    sent[(tenant, wid)] = time.time() * 1000
                    if isinstance(wend, str):
                        end_of.setdefault((tenant, rfc3339_to_ms(wend)), wid)
            producer.flush(60)
            produced = time.time()
            last = (None, time.time())
            while time.time() - last[1] < 20 and time.time() - produced < 300:
                n = len(artifacts(out))
                if n != last[0]:
                    last = (n, time.time())
                time.sleep(0.5)
        finally:
            del producer  # before the broker stops: librdkafka would log its reconnects
            job.send_signal(signal.SIGINT)
            try:
                job.wait(timeout=120)
            except subprocess.TimeoutExpired:
                job.kill()
        fresh = []
        for tenant, wend, registered in artifacts(out).values():
            wid = end_of.get((tenant, wend))
            if wid is None or registered < paced_from:
                continue  # covers warm-up windows
            fresh.append((registered - sent[(tenant, wid)]) / 1000)
    f = np.array(fresh)
    result = {"rate_msgs_per_s": args.rate, "paced_seconds": args.seconds,
              "snapshots": len(f), "p50_s": float(np.percentile(f, 50)),
              "p99_s": float(np.percentile(f, 99)), "max_s": float(f.max())}
    print(f"{len(keyed) - warm} messages paced at {args.rate:.0f}/s into Kafka, 4 tenants, "
          f"snapshot every {DEMO_PROFILE['trainer']['snapshot_interval']} windows; "
          f"{len(f)} snapshots registered from them")
    print(f"freshness (registered - arrival of the newest window): p50 {result['p50_s']:.2f} s, "
          f"p99 {result['p99_s']:.2f} s, max {result['max_s']:.2f} s")
    write_results("freshness", result)


if __name__ == "__main__":
    main()
