"""The job watched as an operator watches it: a standalone Flink cluster runs it, a real
Prometheus (the `prometheus` binary, as `upm flink up --prometheus` starts it) scrapes the
cluster's reporter and an adapter's metrics, and every PromQL expression of dashboard UPM-001
and of the rules returns data. Under the default drift rule, of three tenants the drifting one
fires the drift and quarantine alerts and no other does; the freshness alert fires when the
snapshots stop, and the adapter alert when its syncs fail on a tampered snapshot.

The alert rules are loaded as shipped except for their `for:` durations, set to 0 s so an alert
fires at its first evaluation instead of minutes later (the conditions are the shipped ones)."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from model.lifecycle.adapter import Adapter
from model.lifecycle.registry import open_registry
from model.lifecycle.signing import Verifier, generate_keypair
from model.lifecycle.store import open_store
from runners.adapter_service import serve_metrics
from runners.monitoring import dashboard
from runners.monitoring import local_prometheus as lp
from pipelines.local_job import run_local
from state.config import UpmConfig
from state.records import rfc3339_to_ms
from state.scenario import ScenarioSpec, generate
from pipelines.ports import free_port_range
from tests.core import servers
from tests.core.servers import free_port
from tests.flink.test_cluster import publish, running_cluster, upm, wait_for

JOB = ["--set", "drift.sample_size=200", "--set", "drift.window_duration_ms=600000",
       "--set", "trainer.snapshot_interval=200", "--set", "replay.quiet_release_ms=2000"]
SERVED = "globex"  # a tenant that does not drift: its adapter's alert is about its syncs only


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
                assert n >= 1, expr
            out.append((rule.get("alert") or rule["record"], expr))
    return out


def test_the_shipped_rules_pass_promtool():
    proc = subprocess.run([lp.binary("promtool"), "check", "rules", str(lp.RULES)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, keys):
    """As tests/flink/test_cluster.py's, with a reporter port for the JobManager and each
    TaskManager (one port would leave the TaskManager, where the job's metrics are, without),
    and TaskManagers that sign the snapshots they write."""
    with servers.env({"UPM_SIGNING_KEY_FILE": str(keys[0])}):
        yield from running_cluster(tmp_path_factory, "monitoring",
                                   prometheus_ports=free_port_range(3))


@pytest.fixture()
def adapter(cluster, keys):
    """An adapter serving SERVED's staging model, its metrics on a port; its `env` holds its
    kill switch."""
    store = str(cluster.dir.parent.parent)
    ad = Adapter(open_registry(store), open_store(store), Verifier.from_pems(
        [keys[1].read_bytes()]), SERVED, "staging", "agent-1", sleep=lambda s: None, env={})
    port = free_port()
    server, _ = serve_metrics([ad], port)
    ad.run_polling(0.5)
    try:
        yield ad, f"127.0.0.1:{port}"
    finally:
        ad.stop()
        server.shutdown()


def _window_end(line: str) -> int:
    """A window's end (ms), or -1 for a line that is not a window (feedback, malformed)."""
    try:
        return rfc3339_to_ms(json.loads(line)["window_end"])
    except (ValueError, KeyError, TypeError):
        return -1


def promote(store, keys, tenant, snapshot_id):
    env = {**os.environ, "UPM_VERIFY_KEY_FILES": str(keys[1])}
    proc = subprocess.run([sys.executable, "-m", "runners.cli", "promote", "--store", str(store),
                           "--tenant", tenant, "--to", "staging", "--snapshot", snapshot_id,
                           "--actor", "ops", "--reason", "test"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_expression_has_data_and_each_alert_fires_for_its_tenant(cluster, adapter, keys,
                                                                      tmp_path):
    spec = cluster
    store = spec.dir.parent.parent
    ad, adapter_target = adapter
    inbox = store / "monitoring-inbox"
    inbox.mkdir()
    lines, expected = generate(ScenarioSpec(tenants=3, windows_per_tenant=2000, seed=3))
    drifting = expected.drift_tenant
    assert drifting != SERVED
    # A replayed stream passes a drift episode in less than a scrape interval. So the input
    # stops a little after the quarantine (the engine-free run says when): the judged level
    # stays where it is until more input comes, and the test sees the drift alerts fire
    # before the rest is published.
    cfg = UpmConfig().with_overrides(a for a in JOB if "=" in a)
    (quarantine,) = [q for t in run_local(lines, cfg).tenants.values() for q in t.quarantines]
    assert quarantine.tenant_id == drifting
    pause = quarantine.quarantined_at + 3 * cfg.drift.evaluation_interval_ms
    cut = next(i for i, x in enumerate(lines) if _window_end(x) > pause)
    publish(inbox, "part-0.jsonl", lines[:cut])
    prom = lp.PrometheusSpec(store=str(store), port=free_port(),
                             flink_ports=spec.prometheus_ports, extra_targets=(adapter_target,),
                             scrape_interval="1s", rules=(str(rules_with_no_wait(
                                 tmp_path / "rules.yml")),))
    url = lp.up(prom)

    def firing(alert, **labels):
        return [a["metric"] for a in lp.query(url, f'ALERTS{{alertname="{alert}",alertstate="firing"}}')
                if all(a["metric"].get(k) == v for k, v in labels.items())]

    def fires(alert, timeout, **labels):
        try:
            return wait_for(lambda: firing(alert, **labels), timeout=timeout)
        except AssertionError as e:
            seen = {q: [(s["metric"].get("tenant"), s["value"][1]) for s in lp.query(url, q)]
                    for q in ("upm_trained_total", "upm_tenant_quarantines_total",
                              "upm_tenant_drift_level", "upm_tenant_drift_raise_level",
                              "upm_tenant_snapshot_age_seconds",
                              "tenant_stage:upm_adapter_sync_success:ratio_rate5m")}
            raise AssertionError(f"{alert} not firing for {labels}: {e}; {seen}") from None

    def ever_fired(alert):
        expr = f'max_over_time(ALERTS{{alertname="{alert}",alertstate="firing"}}[1h])'
        return {a["metric"].get("tenant") for a in lp.query(url, expr)}
    try:
        out = upm("submit", "--store", str(store), "--rest-port", str(spec.rest_port),
                  "--input", str(inbox), "--follow", *JOB)
        job_id = out.split("submitted job ")[1].split()[0]
        # Sized for a loaded 2-core box: the drift alert needs the job 60% through its input.
        fires("UpmDriftAboveThreshold", timeout=900, tenant=drifting)
        fires("UpmQuarantineRaised", timeout=300, tenant=drifting)
        publish(inbox, "part-1.jsonl", lines[cut:])

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

        # The input is all read: no tenant writes snapshots any more, and each one's freshness
        # passes its SLO (30 s in the default shadow mode).
        from runners.flink_progress import upm_counters
        wait_for(lambda: upm_counters(spec.rest, job_id).get("messages_in") == len(lines))
        for tenant in expected.tenants:
            fires("UpmSnapshotFreshnessOverSlo", timeout=300, tenant=tenant)

        # The adapter adopts a good snapshot: its syncs succeed. Then, with its syncs paused
        # (the kill switch: such syncs are not counted), the stage moves to a snapshot whose
        # stored bytes are then corrupted; resumed, every sync fails and the alert fires.
        registry = open_registry(str(store))
        first, second = sorted(registry.tenant(SERVED)["artifacts"])[:2]
        promote(store, keys, SERVED, first)
        wait_for(lambda: ad.current and ad.current.snapshot_id == first)
        wait_for(lambda: [s for s in lp.query(
            url, f'tenant_stage:upm_adapter_sync_success:ratio_rate5m{{tenant="{SERVED}"}}')
            if float(s["value"][1]) == 1.0])
        assert not firing("UpmAdapterSyncSuccessLow")
        ad.env["UPM_KILL_SWITCH"] = "1"
        promote(store, keys, SERVED, second)
        path = open_store(str(store)).path_of(registry.artifact(SERVED, second)["uri"])
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        ad.env.pop("UPM_KILL_SWITCH")
        fires("UpmAdapterSyncSuccessLow", timeout=300, tenant=SERVED, stage="staging")
        assert ad.current.snapshot_id == first and ad.syncs["failed"] > 0

        # over the whole run, the drift alerts fired for the drifting tenant and no other
        assert ever_fired("UpmDriftAboveThreshold") == {drifting}
        assert ever_fired("UpmQuarantineRaised") == {drifting}
        upm("cancel", "--rest-port", str(spec.rest_port), job_id)
    finally:
        lp.down(prom)
