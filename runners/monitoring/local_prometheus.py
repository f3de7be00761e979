"""A Prometheus server on 127.0.0.1 scraping the local Flink cluster: `upm flink up --prometheus`.

The server is the `prometheus` binary on PATH (the Makefile installs Debian's package where it
is missing). Its files are under `<store>/flink/prometheus/`: `prometheus.yml` (scraping every
port of the cluster's Prometheus reporter range, and any `--scrape host:port` such as an
adapter's `--metrics-port`), the rules of this package (`rules.yml`), `data/`, `log` and `pid`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from runners.processes import alive

RULES = Path(__file__).with_name("rules.yml")


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class PrometheusSpec:
    store: str = "./upm-data"
    port: int = 9090
    flink_ports: str = "9249-9259"  # the cluster's reporter range (ClusterSpec.prometheus_ports)
    extra_targets: tuple[str, ...] = ()
    scrape_interval: str = "15s"
    rules: tuple[str, ...] = (str(RULES),)

    @property
    def dir(self) -> Path:
        return Path(self.store).resolve() / "flink" / "prometheus"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def binary(name: str = "prometheus") -> str:
    path = shutil.which(name)
    if path is None:
        raise PrometheusError(f"no `{name}` on PATH: `make prometheus` installs Debian's "
                              "package (apt-get install prometheus), or put one on PATH")
    return path


def _ports(spec: str) -> list[int]:
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def config(spec: PrometheusSpec) -> dict:
    return {
        "global": {"scrape_interval": spec.scrape_interval,
                   "evaluation_interval": spec.scrape_interval},
        "rule_files": [str(Path(r).resolve()) for r in spec.rules],
        "scrape_configs": [
            {"job_name": "flink",
             "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in _ports(spec.flink_ports)]}]},
            *([{"job_name": "upm-adapters",
                "static_configs": [{"targets": list(spec.extra_targets)}]}]
              if spec.extra_targets else []),
        ],
    }


def up(spec: PrometheusSpec, wait_s: float = 60.0) -> str:
    """Start the server (stopping one this store started before); return its URL once ready."""
    down(spec)
    spec.dir.mkdir(parents=True, exist_ok=True)
    conf = spec.dir / "prometheus.yml"
    conf.write_text(yaml.safe_dump(config(spec), sort_keys=False))
    check = subprocess.run([binary("promtool"), "check", "config", str(conf)],
                           capture_output=True, text=True)
    if check.returncode:
        raise PrometheusError(f"promtool check config {conf}: {check.stdout}{check.stderr}")
    log = open(spec.dir / "log", "ab")
    proc = subprocess.Popen(
        [binary(), f"--config.file={conf}", f"--storage.tsdb.path={spec.dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{spec.port}", "--web.enable-lifecycle"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (spec.dir / "pid").write_text(str(proc.pid))
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise PrometheusError(f"prometheus exited with {proc.returncode}; see "
                                  f"{spec.dir / 'log'}")
        try:
            with urllib.request.urlopen(spec.url + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return spec.url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise PrometheusError(f"prometheus not ready on {spec.url} after {wait_s:.0f} s")


def down(spec: PrometheusSpec, timeout_s: float = 30.0) -> None:
    pid_file = spec.dir / "pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text() or 0)
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + timeout_s
        while alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def query(url: str, expr: str) -> list[dict]:
    """The instant vector `expr` gives now (raises on a PromQL error)."""
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise PrometheusError(f"{expr}: {body}")
    return body["data"]["result"]
