"""The job watched as an operator watches it: a standalone Flink cluster runs it, a real
Prometheus (the `prometheus` binary, as `upm flink up --prometheus` starts it) scrapes the
cluster's reporter and an adapter's metrics, and every PromQL expression of dashboard UPM-001
and of the rules returns data; the drifting tenant fires the drift alerts.

The alert rules are loaded as shipped except for their `for:` durations, set to 0 s so an alert
fires at its first evaluation instead of minutes later (the conditions are the shipped ones)."""

import os
import re
import subprocess

import pytest
import yaml

from model.lifecycle.adapter import Adapter
from model.lifecycle.registry import open_registry
from model.lifecycle.signing import Verifier
from model.lifecycle.store import open_store
from runners.adapter_service import serve_metrics
from runners.monitoring import dashboard
from runners.monitoring import local_prometheus as lp
from state.scenario import ScenarioSpec, generate
from pipelines.ports import free_port_range
from runners import flink_cluster as fc
from tests.core.servers import free_port
from tests.flink.test_cluster import upm, wait_for

JOB = ["--set", "drift.rule=absolute", "--set", "drift.sample_size=200",
       "--set", "trainer.snapshot_interval=200", "--set", "replay.quiet_release_ms=2000"]


def rules_with_no_wait(path):
    doc = yaml.safe_load(lp.RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(doc))
    return path


def rule_expressions():
    """Every rule's expression; an alert's comparison made `bool`, so the expression returns
    its series (0 or 1) whether or not the alert condition holds."""
    out = []
    for group in yaml.safe_load(lp.RULES.read_text())["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            if "alert" in rule:
                expr, n = re.subn(r"\s(>|<|>=|<=|==|!=)\s", r" \1 bool ", expr)
                assert n == 1, expr
            out.append((rule.get("alert") or rule["record"], expr))
    return out


def test_the_shipped_rules_pass_promtool():
    proc = subprocess.run([lp.binary("promtool"), "check", "rules", str(lp.RULES)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """As tests/flink/test_cluster.py's, with a reporter port for the JobManager and each
    TaskManager (one port would leave the TaskManager, where the job's metrics are, without)."""
    store = tmp_path_factory.mktemp("monitoring")
    spec = fc.ClusterSpec(store=str(store), rest_port=free_port(), rpc_port=free_port(),
                          prometheus_ports=free_port_range(3))
    fc.up(spec)
    try:
        yield spec
    finally:
        fc.down(spec)


@pytest.fixture()
def adapter_metrics(cluster):
    store = str(cluster.dir.parent.parent)
    ad = Adapter(open_registry(store), open_store(store), Verifier({}), "acme", "staging",
                 "agent-1", sleep=lambda s: None, env={})
    port = free_port()
    server, _ = serve_metrics([ad], port)
    ad.run_polling(0.5)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ad.stop()
        server.shutdown()


def test_every_dashboard_and_rule_expression_has_data_and_drift_fires(cluster, adapter_metrics,
                                                                       tmp_path):
    spec = cluster
    store = spec.dir.parent.parent
    inbox = store / "monitoring-inbox"
    inbox.mkdir()
    lines, expected = generate(ScenarioSpec(tenants=2, windows_per_tenant=1500, seed=3))
    (inbox / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    prom = lp.PrometheusSpec(store=str(store), port=free_port(),
                             flink_ports=spec.prometheus_ports, extra_targets=(adapter_metrics,),
                             scrape_interval="1s", rules=(str(rules_with_no_wait(
                                 tmp_path / "rules.yml")),))
    url = lp.up(prom)
    try:
        out = upm("submit", "--store", str(store), "--rest-port", str(spec.rest_port),
                  "--input", str(inbox), "--follow", *JOB)
        job_id = out.split("submitted job ")[1].split()[0]
        drifting = expected.drift_tenant

        def firing(alert):
            return [a for a in lp.query(url, f'ALERTS{{alertname="{alert}",alertstate="firing"}}')
                    if a["metric"].get("tenant") == drifting]

        def fires(alert, timeout):
            # The change is 60% into the stream: how far the job got says whether it was slow
            # or wrong.
            try:
                return wait_for(lambda: firing(alert), timeout=timeout)
            except AssertionError as e:
                seen = {q: [(s["metric"].get("tenant"), s["value"][1]) for s in lp.query(url, q)]
                        for q in ("upm_trained_total", "upm_tenant_quarantines_total",
                                  "upm_tenant_drift_level", "upm_tenant_drift_raise_level")}
                raise AssertionError(f"{alert} not firing for {drifting}: {e}; {seen}") from None
        # Sized for a loaded 2-core box: the drift alert needs the job 60% through its input.
        assert fires("UpmDriftAboveThreshold", timeout=900)
        assert fires("UpmQuarantineRaised", timeout=300)

        wanted = [(e, e) for e in dashboard.expressions()] + rule_expressions()

        def empty():
            return [name for name, e in wanted if not lp.query(url, e)]
        try:
            wait_for(lambda: not empty(), timeout=300)
        except AssertionError:
            raise AssertionError(f"no data for: {empty()}") from None

        tenants = {s["metric"]["tenant"] for s in lp.query(url, "upm_tenant_training_loss")}
        assert tenants == set(expected.tenants)
        png = os.environ.get("UPM_DASHBOARD_PNG") or str(tmp_path / "upm-001.png")
        found = dashboard.render(url, png, minutes=10)
        assert all(found.values()), found
        upm("cancel", "--rest-port", str(spec.rest_port), job_id)
    finally:
        lp.down(prom)
