"""Dashboard UPM-001: its panels as PromQL, once, for Grafana and for a picture drawn here.

`PANELS` is the dashboard (the seeds' six panels, and the job's throughput and restarts).
`grafana_json()` is the provisioned Grafana dashboard (docker/grafana/dashboards/upm-001.json
is its output, checked by a test); `render(prometheus_url, path)` queries a live Prometheus
for the same expressions over the last `hours` and draws them with matplotlib, for a README or
a place Grafana is not installed.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str  # a Grafana legend format: {{label}} is the series' label
    dashed: bool = False  # a limit (an SLO, a threshold), drawn dashed


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # Grafana unit id
    axis: str  # the axis label, with its unit
    queries: tuple[Query, ...]


PANELS = (
    Panel("Snapshot freshness (time since the last snapshot was written)", "s", "seconds",
          (Query("upm_tenant_snapshot_age_seconds", "{{tenant}}"),
           Query("upm_tenant_freshness_slo_seconds", "{{tenant}} SLO", dashed=True))),
    Panel("Drift p95, rolling 1 h and 24 h", "none", "absolute error (p95)",
          (Query("avg_over_time(upm_tenant_drift_p95[1h])", "{{tenant}} 1 h"),
           Query("avg_over_time(upm_tenant_drift_p95[24h])", "{{tenant}} 24 h"),
           Query("upm_tenant_drift_raise_level", "{{tenant}} quarantine level", dashed=True))),
    Panel("Training loss per trainer", "none", "loss (last step)",
          (Query("upm_tenant_training_loss", "{{tenant}}"),)),
    Panel("Adapter sync success rate (5 min)", "percentunit", "successful syncs",
          (Query("tenant_stage:upm_adapter_sync_success:ratio_rate5m", "{{tenant}}/{{stage}}"),
           Query("vector(0.995)", "SLO 99.5%", dashed=True))),
    Panel("Quarantine events (raised since the job started)", "none", "quarantines",
          (Query("upm_tenant_quarantines_total", "{{tenant}}"),)),
    Panel("Replay buffer size (current and 24 h max)", "none", "windows held",
          (Query("upm_tenant_replay_held_windows", "{{tenant}}"),
           Query("max_over_time(upm_tenant_replay_held_windows[24h])", "{{tenant}} max",
                 dashed=True))),
    Panel("Throughput (windows per second)", "wps", "windows / s",
          (Query("rate(upm_windows_in_total[1m])", "in"),
           Query("rate(upm_trained_total[1m])", "trained"),
           Query("rate(upm_dead_letters_total[1m])", "dead letters"))),
    Panel("Job restarts", "none", "restarts",
          (Query("flink_jobmanager_job_numRestarts", "{{job_name}}"),)),
)


def expressions() -> list[str]:
    return [q.expr for p in PANELS for q in p.queries]


def grafana_json() -> dict:
    """The Grafana dashboard, its datasource the provisioned Prometheus (uid `prometheus`)."""
    source = {"type": "prometheus", "uid": "prometheus"}
    panels = []
    for i, p in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": p.title, "datasource": source,
            "gridPos": {"x": 12 * (i % 2), "y": 8 * (i // 2), "w": 12, "h": 8},
            "fieldConfig": {"defaults": {"unit": p.unit, "custom": {"axisLabel": p.axis}},
                            "overrides": [
                                {"matcher": {"id": "byName", "options": q.legend},
                                 "properties": [{"id": "custom.lineStyle",
                                                 "value": {"fill": "dash", "dash": [10, 10]}}]}
                                for q in p.queries if q.dashed and "{{" not in q.legend]},
            "targets": [{"refId": chr(65 + j), "expr": q.expr, "legendFormat": q.legend,
                         "datasource": source} for j, q in enumerate(p.queries)],
        })
    return {"uid": "upm-001", "title": "UPM-001 UPM Stream", "schemaVersion": 39,
            "tags": ["upm"], "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
            "panels": panels}


def query_range(prometheus_url: str, expr: str, start: float, end: float, step: float
                ) -> list[dict]:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise ValueError(f"{expr}: {body}")
    return body["data"]["result"]


def _legend(fmt: str, labels: dict) -> str:
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def render(prometheus_url: str, path: str, minutes: float = 60, end: float | None = None,
           title: str = "UPM-001 (rendered from Prometheus)") -> dict[str, int]:
    """Draw every panel from `prometheus_url` over the last `minutes`; return the number of
    series each expression gave."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from datetime import datetime, timezone

    end = end or time.time()
    start = end - minutes * 60
    step = max(1.0, minutes * 60 / 300)
    rows = (len(PANELS) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    found: dict[str, int] = {}
    for ax, p in zip(axes.flat, PANELS):
        for q in p.queries:
            series = query_range(prometheus_url, q.expr, start, end, step)
            found[q.expr] = len(series)
            for s in series:
                ts = [datetime.fromtimestamp(float(t), timezone.utc) for t, _ in s["values"]]
                ax.plot(ts, [float(v) for _, v in s["values"]], "--" if q.dashed else "-",
                        lw=1.2, label=_legend(q.legend, s["metric"]))
        ax.set_title(p.title, fontsize=10)
        ax.set_ylabel(p.axis, fontsize=9)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M" if minutes > 30 else "%H:%M:%S"))
        ax.set_xlabel("time (UTC)", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(PANELS):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return found


if __name__ == "__main__":  # python -m runners.monitoring.dashboard > upm-001.json
    print(json.dumps(grafana_json(), indent=2))
