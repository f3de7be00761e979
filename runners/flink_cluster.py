"""A standalone Flink cluster from the pinned PyFlink package: `upm flink up|down|status`, and
submitting, listing, cancelling and stopping jobs on it.

Everything the cluster needs is generated under `<store>/flink/cluster/`:

    conf/config.yaml   bound to 127.0.0.1, thread-mode Python with this venv's interpreter,
                       checkpoints and savepoints under <store>/flink/, Prometheus reporter on
    lib/               links to PyFlink's jars plus opt/flink-python-*.jar (thread mode needs it
                       on the cluster's lib path) and any connector jars
    log/, pid/         the daemons' logs and pid files

The daemons are PyFlink's own `bin/jobmanager.sh` and `bin/taskmanager.sh`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runners.processes import alive


def flink_home() -> Path:
    import pyflink
    return Path(pyflink.__file__).parent


@dataclass(frozen=True)
class ClusterSpec:
    store: str = "./upm-data"
    rest_port: int = 8081
    rpc_port: int = 6123
    slots: int = 1  # thread mode: a TaskManager's slots share one interpreter (DESIGN §6)
    taskmanagers: int = 1
    checkpoint_interval_ms: int = 5000
    prometheus_ports: str = "9249-9259"
    extra_jars: tuple[str, ...] = ()
    bind_host: str = "127.0.0.1"        # 0.0.0.0 inside containers
    jobmanager_host: str = "127.0.0.1"  # how TaskManagers and clients reach the JobManager
    taskmanager_host: str = "127.0.0.1"
    gpus_per_taskmanager: int = 0       # > 0: Flink's GPU external resource is configured
    state_backend: str = "rocksdb"      # the jobs' default (or "hashmap": the JVM heap)

    @property
    def dir(self) -> Path:
        return Path(self.store).resolve() / "flink" / "cluster"

    @property
    def rest(self) -> str:
        return f"http://{self.jobmanager_host}:{self.rest_port}"


def _config_yaml(spec: ClusterSpec) -> str:
    base = Path(spec.store).resolve() / "flink"
    original = (flink_home() / "conf" / "config.yaml").read_text()
    java_opts = ""
    for line in original.splitlines():
        if line.strip().startswith("all:") and "--add-opens" in line:
            java_opts = line.split("all:", 1)[1].strip()
    conf = {
        "env.java.opts.all": f"{java_opts} -Djava.io.tmpdir={spec.dir / 'tmp'}".strip(),
        "jobmanager.rpc.address": spec.jobmanager_host,
        "jobmanager.rpc.port": spec.rpc_port,
        "jobmanager.bind-host": spec.bind_host,
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.bind-host": spec.bind_host,
        "taskmanager.host": spec.taskmanager_host,
        "taskmanager.numberOfTaskSlots": spec.slots,
        "taskmanager.memory.process.size": "3072m",
        "taskmanager.memory.task.off-heap.size": "512m",
        "rest.address": spec.jobmanager_host,
        "rest.bind-address": spec.bind_host,
        "rest.port": spec.rest_port,
        "parallelism.default": 1,
        "python.execution-mode": "thread",
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "state.backend.type": spec.state_backend,
        "execution.checkpointing.incremental": str(spec.state_backend == "rocksdb").lower(),
        "execution.checkpointing.dir": (base / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (base / "savepoints").as_uri(),
        "execution.checkpointing.interval": f"{spec.checkpoint_interval_ms}ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": 20,
        "restart-strategy.fixed-delay.delay": "2s",
        "metrics.reporter.prom.factory.class":
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "metrics.reporter.prom.port": spec.prometheus_ports,
        "metrics.reporter.prom.host": spec.bind_host,
        "metrics.fetcher.update-interval": 1000,
        "heartbeat.timeout": 20000,
        # the daemons' temporary files (and, through TMPDIR, their embedded Python's) under
        # the cluster's directory, removed by `down`, not left in the system's
        "io.tmp.dirs": str(spec.dir / "tmp"),
    }
    if spec.gpus_per_taskmanager:
        # Flink's GPU plugin (plugins/external-resource-gpu) discovers NVIDIA GPUs; the Trainer's
        # slot sharing group asks for one (pipelines/flink_job.py, model.device = "gpu").
        conf.update({
            "external-resources": "gpu",
            "external-resource.gpu.amount": spec.gpus_per_taskmanager,
            "external-resource.gpu.driver-factory.class":
                "org.apache.flink.externalresource.gpu.GPUDriverFactory",
            "external-resource.gpu.param.discovery-script.path":
                str(flink_home() / "plugins" / "external-resource-gpu" / "nvidia-gpu-discovery.sh"),
        })
    return "".join(f"{k}: {json.dumps(v) if isinstance(v, str) else v}\n" for k, v in conf.items())


def _env(spec: ClusterSpec) -> dict[str, str]:
    d = spec.dir
    env = dict(os.environ)
    env.update(FLINK_HOME=str(flink_home()), FLINK_CONF_DIR=str(d / "conf"),
               FLINK_LIB_DIR=str(d / "lib"), FLINK_LOG_DIR=str(d / "log"),
               FLINK_PID_DIR=str(d / "pid"), FLINK_PLUGINS_DIR=str(flink_home() / "plugins"),
               TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(d / "tmp"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def prepare(spec: ClusterSpec) -> None:
    d = spec.dir
    for sub in ("conf", "lib", "log", "pid", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "conf" / "config.yaml").write_text(_config_yaml(spec))
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties",
                 "logback.xml"):
        shutil.copy(flink_home() / "conf" / name, d / "conf" / name)
    (d / "conf" / "workers").write_text("127.0.0.1\n")
    (d / "conf" / "masters").write_text(f"127.0.0.1:{spec.rest_port}\n")
    for old in (d / "lib").iterdir():
        old.unlink()
    jars = [*(flink_home() / "lib").glob("*.jar"), *(flink_home() / "opt").glob("flink-python-*.jar"),
            *map(Path, spec.extra_jars)]
    for jar in jars:
        (d / "lib" / jar.name).symlink_to(jar.resolve())


def _daemon(spec: ClusterSpec, script: str, action: str) -> None:
    subprocess.run(["bash", str(flink_home() / "bin" / script), action], env=_env(spec),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def overview(spec: ClusterSpec, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(spec.rest + "/overview", timeout=timeout) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def up(spec: ClusterSpec, wait_s: float = 90.0) -> dict:
    if overview(spec):
        raise RuntimeError(f"something already answers on {spec.rest}")
    prepare(spec)
    _daemon(spec, "jobmanager.sh", "start")
    for _ in range(spec.taskmanagers):
        _daemon(spec, "taskmanager.sh", "start")
    deadline = time.time() + wait_s
    while time.time() < deadline:
        ov = overview(spec)
        if ov and ov.get("taskmanagers", 0) >= spec.taskmanagers:
            return ov
        time.sleep(1)
    raise RuntimeError(f"the cluster did not come up within {wait_s:.0f}s; see {spec.dir / 'log'}")


def foreground(spec: ClusterSpec, role: str) -> None:
    """Run one daemon in the foreground (containers): role is jobmanager or taskmanager."""
    prepare(spec)
    script = {"jobmanager": "jobmanager.sh", "taskmanager": "taskmanager.sh"}[role]
    os.execve("/bin/bash", ["bash", str(flink_home() / "bin" / script), "start-foreground"],
              _env(spec))


def add_taskmanager(spec: ClusterSpec) -> None:
    _daemon(spec, "taskmanager.sh", "start")


def down(spec: ClusterSpec) -> None:
    for script in ("taskmanager.sh", "jobmanager.sh"):
        try:
            _daemon(spec, script, "stop-all")
        except subprocess.CalledProcessError:
            pass
    # what the daemons' embedded Python left (it never runs its exit hooks); a daemon still
    # stopping keeps its own files open, which Linux lets it do
    shutil.rmtree(spec.dir / "tmp", ignore_errors=True)


def taskmanager_pids(spec: ClusterSpec) -> list[int]:
    """The live TaskManagers' pids (the pid file keeps those of killed ones too)."""
    pids = []
    for f in (spec.dir / "pid").glob("*taskexecutor*.pid"):
        pids += [int(x) for x in f.read_text().split() if x.strip().isdigit()]
    return [p for p in pids if alive(p)]


def rest(spec: ClusterSpec, path: str, method: str = "GET", body: dict | None = None,
         timeout: float = 10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(spec.rest + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read()
        return json.loads(text) if text else {}


if __name__ == "__main__":
    # Container entry: python -m runners.flink_cluster jobmanager|taskmanager, configured by
    # UPM_STORE, UPM_FLINK_BIND_HOST, UPM_FLINK_JOBMANAGER_HOST, UPM_FLINK_TASKMANAGER_HOST,
    # UPM_FLINK_SLOTS and UPM_FLINK_GPUS.
    e = os.environ
    foreground(ClusterSpec(store=e.get("UPM_STORE", "/data/upm"),
                           bind_host=e.get("UPM_FLINK_BIND_HOST", "0.0.0.0"),
                           jobmanager_host=e.get("UPM_FLINK_JOBMANAGER_HOST", "jobmanager"),
                           taskmanager_host=e.get("UPM_FLINK_TASKMANAGER_HOST", "taskmanager"),
                           slots=int(e.get("UPM_FLINK_SLOTS", "1")),
                           gpus_per_taskmanager=int(e.get("UPM_FLINK_GPUS", "0"))),
               sys.argv[1])
