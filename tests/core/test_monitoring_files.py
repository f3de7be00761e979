"""The monitoring files are one source: the provisioned Grafana dashboard is what
runners/monitoring/dashboard.py generates, every series the dashboard and alerts read is
recorded by the rules or exported by a component, and an adapter's metrics are named as
Prometheus names them. (tests/flink/test_monitoring.py queries them all on a live job.)"""

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from model.lifecycle.adapter import Adapter
from runners.adapter_service import AdapterCollector
from runners.monitoring import dashboard
from runners.monitoring import local_prometheus as lp
from tests.core.governance_helpers import World

ROOT = Path(__file__).resolve().parents[2]
# series that are not recorded by the rules: the Flink reporter's and the adapter exporter's
EXPORTED = re.compile(r"^(flink_\w+|upm_adapter_\w+)$")


def test_the_provisioned_grafana_dashboard_is_the_generated_one():
    shipped = json.loads((ROOT / "docker/grafana/dashboards/upm-001.json").read_text())
    assert shipped == dashboard.grafana_json(), "run: python -m runners.monitoring.dashboard " \
        "> docker/grafana/dashboards/upm-001.json"
    assert shipped["uid"] == "upm-001" and len(shipped["panels"]) == len(dashboard.PANELS)


def test_every_series_read_is_recorded_or_exported():
    groups = yaml.safe_load(lp.RULES.read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    exprs = dashboard.expressions() + [r["expr"] for g in groups for r in g["rules"]]
    for expr in exprs:
        bare = re.sub(r"\b(?:by|on|ignoring|without)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]",
                      " ", expr)
        names = {n for n in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", bare)
                 if n not in ("bool", "and", "or", "unless")}
        for name in names:
            assert name in recorded or EXPORTED.match(name), (name, expr)
    for name in recorded:  # Prometheus naming: base units, counters end in _total
        assert not re.search(r"_(ms|micro)$", name), name


def test_the_compose_prometheus_reads_the_shipped_rules():
    conf = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert f"../runners/monitoring/rules.yml:{conf['rule_files'][0]}:ro" in mounts
    local = lp.config(lp.PrometheusSpec(flink_ports="9249-9251", extra_targets=("h:1",)))
    assert local["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9249", "127.0.0.1:9250", "127.0.0.1:9251"]
    assert local["rule_files"] == [str(lp.RULES)]


def test_an_adapters_syncs_are_prometheus_counters(tmp_path):
    w = World(tmp_path, n=1)
    ad = Adapter(w.registry, w.store, w.verifier, "acme", "staging", "agent-1",
                 sleep=lambda s: None, env={})
    assert ad.sync().status == "empty"
    w.gov.promote("acme", "staging", w.ids()[0], "ops", "new")
    w.clock.advance(3)
    assert ad.sync().status == "adopted" and ad.sync().status == "unchanged"
    registry = CollectorRegistry()
    registry.register(AdapterCollector([ad]))
    text = generate_latest(registry).decode()
    labels = 'adapter="agent-1",result="{}",stage="staging",tenant="acme"'
    for result, n in (("adopted", 1), ("unchanged", 1), ("empty", 1), ("failed", 0)):
        assert f"upm_adapter_syncs_total{{{labels.format(result)}}} {n}.0" in text, text
    assert 'upm_adapter_served_version{adapter="agent-1",stage="staging",tenant="acme"} 1.0' in text
    assert 'upm_adapter_adoption_lag_seconds{adapter="agent-1",stage="staging",tenant="acme"} 3.0' \
        in text


def test_upm_adapter_once_adopts_what_the_stage_points_to(tmp_path):
    import subprocess
    import sys
    w = World(tmp_path, n=1)
    w.gov.promote("acme", "staging", w.ids()[0], "ops", "new")
    proc = subprocess.run(
        [sys.executable, "-m", "runners.cli", "adapter", "--store", str(tmp_path), "--tenant",
         "acme", "--stage", "staging", "--adapter-id", "agent-9", "--once"],
        capture_output=True, text=True, timeout=300,
        env={"UPM_VERIFY_KEY_FILES": str(w.pub), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"agent-9: adopted {w.ids()[0]}" in proc.stdout
    assert w.registry.view("acme").adoption["agent-9"]["snapshot_id"] == w.ids()[0]
