"""`upm adapter`: an Adapter following one stage of a tenant, with its syncs as Prometheus metrics.

What an agent embeds (model/lifecycle/adapter.py), run as a process: it syncs every
`--interval` seconds and, with `--metrics-port`, serves on 127.0.0.1:

    upm_adapter_syncs_total{adapter, tenant, stage, result}   syncs by result (a counter)
    upm_adapter_served_version{adapter, tenant, stage}         the version served (0: none)
    upm_adapter_adoption_lag_seconds{adapter, tenant, stage}   stage pointer moved -> serving

The alert rules (runners/monitoring/rules.yml) hold the sync success rate to 99.5%.
"""

from __future__ import annotations

import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from model.lifecycle.adapter import Adapter


class AdapterCollector:
    """Reads the adapters' own counters at scrape time (nothing to keep in step)."""

    def __init__(self, adapters: list[Adapter]):
        self.adapters = adapters

    def collect(self):
        labels = ["adapter", "tenant", "stage"]
        syncs = CounterMetricFamily("upm_adapter_syncs", "Adapter syncs by result",
                                    labels=labels + ["result"])
        version = GaugeMetricFamily("upm_adapter_served_version",
                                    "Version of the snapshot served (0: none yet)", labels=labels)
        lag = GaugeMetricFamily("upm_adapter_adoption_lag_seconds",
                                "Seconds from the stage pointing at the served snapshot to this "
                                "adapter serving it", labels=labels)
        for a in self.adapters:
            ids = [a.adapter_id, a.tenant, a.stage]
            for result, n in a.syncs.items():
                syncs.add_metric(ids + [result], n)
            version.add_metric(ids, a.current.version if a.current else 0)
            if a.last_adoption_lag_s is not None:
                lag.add_metric(ids, a.last_adoption_lag_s)
        yield syncs
        yield version
        yield lag


def serve_metrics(adapters: list[Adapter], port: int, host: str = "127.0.0.1"):
    """Start the metrics endpoint on a daemon thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(AdapterCollector(adapters))
    return start_http_server(port, addr=host, registry=registry)


def cmd_adapter(args) -> int:
    from model.lifecycle.registry import open_registry
    from model.lifecycle.signing import Verifier
    from model.lifecycle.store import open_store

    adapter = Adapter(open_registry(args.store), open_store(args.store), Verifier.from_env(),
                      args.tenant, args.stage, args.adapter_id)
    if args.metrics_port:
        serve_metrics([adapter], args.metrics_port)
        print(f"adapter {args.adapter_id}: metrics on http://127.0.0.1:{args.metrics_port}/metrics",
              flush=True)
    try:
        while True:
            r = adapter.sync()
            if r.status in ("adopted", "failed"):
                print(f"adapter {args.adapter_id}: {r.status} {r.snapshot_id}"
                      + (f" ({r.error})" if r.error else ""), flush=True)
            if args.once:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return 0


def add_commands(sub) -> None:
    a = sub.add_parser("adapter", help="serve-side adapter: follow a stage, verify, hot-reload")
    a.add_argument("--store", default="./upm-data", help="store root (default ./upm-data)")
    a.add_argument("--tenant", required=True)
    a.add_argument("--stage", default="active")
    a.add_argument("--adapter-id", default="adapter")
    a.add_argument("--interval", type=float, default=5.0, help="seconds between syncs")
    a.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    a.add_argument("--once", action="store_true", help="sync once and exit")
    a.set_defaults(func=cmd_adapter)
