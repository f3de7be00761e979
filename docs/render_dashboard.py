"""Render docs/upm-001.png: dashboard UPM-001 drawn from a real Prometheus scraping a real job.

    .venv-flink/bin/python docs/render_dashboard.py [--minutes 6] [--out docs/upm-001.png]

What it runs, all on 127.0.0.1 under a temporary store: a standalone Flink cluster with the
Prometheus reporter (`upm flink up --prometheus`, signing snapshots with a fresh key), the
job reading a directory that gets a new part of a 3-tenant scenario (one tenant drifts) every
few seconds, an adapter (`upm adapter`'s code) following each tenant's staging stage with its
metrics scraped, and a promotion of each tenant's newest snapshot to staging every 30 s.
Then it draws every panel over the run with runners/monitoring/dashboard.render and prints the
alerts Prometheus has firing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.lifecycle.adapter import Adapter  # noqa: E402
from model.lifecycle.governance import Governance, GovernanceError, JsonLinesSink, events_path  # noqa: E402
from model.lifecycle.policy import DEFAULT_POLICY_TOML, Policy  # noqa: E402
from model.lifecycle.registry import open_registry  # noqa: E402
from model.lifecycle.signing import Verifier, generate_keypair  # noqa: E402
from model.lifecycle.store import open_store  # noqa: E402
from pipelines.ports import free_port, free_port_range  # noqa: E402
from runners import flink_cluster as fc  # noqa: E402
from runners.adapter_service import serve_metrics  # noqa: E402
from runners.monitoring import dashboard  # noqa: E402
from runners.monitoring import local_prometheus as lp  # noqa: E402
from state.scenario import ScenarioSpec, generate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "upm-001.png"))
    args = ap.parse_args()
    store = Path(tempfile.mkdtemp(prefix="upm-dashboard-"))
    priv, pub = generate_keypair(store / "keys")
    os.environ["UPM_SIGNING_KEY_FILE"] = str(priv)  # the TaskManager inherits it
    spec = fc.ClusterSpec(store=str(store), rest_port=free_port(), rpc_port=free_port(),
                          prometheus_ports=free_port_range(3))
    fc.up(spec)
    adapter_port = free_port()
    prom = lp.PrometheusSpec(store=str(store), port=free_port(), flink_ports=spec.prometheus_ports,
                             extra_targets=(f"127.0.0.1:{adapter_port}",), scrape_interval="2s")
    url = lp.up(prom)
    print(f"Flink {spec.rest}/  Prometheus {url}/  store {store}", flush=True)
    try:
        lines, expected = generate(ScenarioSpec(tenants=3, windows_per_tenant=6000, seed=5,
                                                drift_at=0.5))
        inbox = store / "inbox"
        inbox.mkdir()
        verifier = Verifier.from_pems([pub.read_bytes()])
        registry, snapshots = open_registry(str(store)), open_store(str(store))
        adapters = [Adapter(registry, snapshots, verifier, t, "staging", f"agent-{t}")
                    for t in expected.tenants]
        serve_metrics(adapters, adapter_port)
        for a in adapters:
            a.run_polling(2.0)
        gov = Governance(registry, snapshots, Policy.from_toml(DEFAULT_POLICY_TOML), verifier,
                         JsonLinesSink(events_path(str(store))))
        subprocess.run([sys.executable, "-m", "runners.cli", "submit", "--store", str(store),
                        "--rest-port", str(spec.rest_port), "--input", str(inbox), "--follow",
                        "--set", "drift.rule=absolute", "--set", "drift.sample_size=300",
                        "--set", "trainer.snapshot_interval=300",
                        "--set", "replay.quiet_release_ms=2000"], check=True, cwd=ROOT)
        start, parts = time.time(), 40
        run_s = args.minutes * 60
        step = len(lines) // parts + 1
        last_promotion = 0.0
        for i in range(parts):
            (inbox / f"part-{i:03d}.jsonl").write_text("\n".join(lines[i * step:(i + 1) * step])
                                                       + "\n")
            while time.time() < start + (i + 1) * run_s / parts:
                if time.time() - last_promotion > 30:
                    last_promotion = time.time()
                    for t in expected.tenants:
                        view = registry.view(t)
                        newest = view.newest() if view else None
                        if newest is not None:
                            try:
                                gov.promote(t, "staging", newest.id, "render", "demo")
                            except GovernanceError as e:
                                print(f"promotion of {newest.id}: {e}")
                time.sleep(1)
        time.sleep(10)
        found = dashboard.render(url, args.out, minutes=args.minutes + 0.5)
        print(f"wrote {args.out}; series per expression: {found}")
        for a in lp.query(url, 'ALERTS{alertstate="firing"}'):
            m = a["metric"]
            print(f"firing: {m['alertname']} {m.get('tenant', '')} {m.get('stage', '')}")
        for a in adapters:
            a.stop()
    finally:
        lp.down(prom)
        fc.down(spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
