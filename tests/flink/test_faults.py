"""Faults an operator meets, each behind a claim of the README: the Kafka connector jars that
fail their pins, and a TaskManager killed under a job on `upm flink up --taskmanagers 2`
(the spare takes over; Prometheus raises UpmJobRestarting)."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "pipelines", "runners", "state", "transforms")


# -- the Kafka connector jars -----------------------------------------------------------------

@pytest.fixture()
def install(tmp_path):
    """A second installation of UPM Stream: its own prefix (so its own `upm-jars/`, copied from
    this one's) and its own copy of the sources (so its own `kafka-jars.sha256`), over this
    environment's packages. Tampering with it leaves this environment alone."""
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "flink-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.copytree(Path(sys.prefix) / "upm-jars", prefix / "upm-jars")
    src = tmp_path / "src"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "UPM_KAFKA_JARS"}
    env["PYTHONPATH"] = str(src)
    return prefix, src, env


def kafka_submit(prefix, env, tmp_path):
    """`upm submit` of a Kafka job, from that installation, to a cluster that is not there."""
    return subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "runners.cli", "submit", "--store",
         str(tmp_path / "store"), "--rest-port", "1", "--kafka-bootstrap", "127.0.0.1:1",
         "--kafka-topic", "windows"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)


def refused(proc, words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stdout + proc.stderr
    assert words in lines[0] and "Traceback" not in proc.stderr, lines[0]
    return lines[0]


def test_the_intact_installation_gets_past_the_jar_check(install, tmp_path):
    # so the refusals below come from the jars, not from the second installation itself
    prefix, _, env = install
    refused(kafka_submit(prefix, env, tmp_path), "no Flink cluster answers on http://127.0.0.1:1/")


def test_a_tampered_jar_is_refused(install, tmp_path):
    prefix, _, env = install
    jar = prefix / "upm-jars" / "kafka-clients.jar"
    data = bytearray(jar.read_bytes())
    data[len(data) // 2] ^= 0x01
    jar.write_bytes(bytes(data))
    line = refused(kafka_submit(prefix, env, tmp_path), "kafka-clients.jar has sha256")
    assert "refusing it" in line


def test_a_wrong_checksum_line_is_refused(install, tmp_path):
    prefix, src, env = install
    pins = src / "transforms" / "flink" / "kafka-jars.sha256"
    text = pins.read_text()
    digest = text.split()[0]
    pins.write_text(text.replace(digest, digest[::-1]))  # a well-formed pin of other bytes
    refused(kafka_submit(prefix, env, tmp_path), "flink-connector-kafka.jar has sha256")
    pins.write_text(text.replace(digest, digest[:40]))  # not a pin at all
    refused(kafka_submit(prefix, env, tmp_path), "kafka-jars.sha256:1 is not `<sha256>")


def test_kafka_jars_naming_a_missing_file_are_refused(install, tmp_path):
    prefix, _, env = install
    env = {**env, "UPM_KAFKA_JARS": f"{prefix / 'upm-jars' / 'kafka-clients.jar'}:/nowhere/x.jar"}
    refused(kafka_submit(prefix, env, tmp_path), "UPM_KAFKA_JARS names missing files: /nowhere/x.jar")


# -- the spare TaskManager ----------------------------------------------------------------------

def listening_pid(port: int, pids: list[int]) -> int:
    """Which of `pids` listens on TCP `port` (from /proc: the socket's inode among its fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            f = row.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    owners = {pid for pid in pids if inodes & _sockets(pid)}
    assert len(owners) == 1, (port, owners)
    return owners.pop()


def _sockets(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.add(os.readlink(fd))
        except FileNotFoundError:  # closed while we looked
            pass
    return out


def taskmanager_of(spec, job_id: str) -> tuple[str, int]:
    """The id and RPC port of the TaskManager that runs the job's Tenant operator."""
    from runners import flink_cluster as fc
    vertex = [v for v in fc.rest(spec, f"/jobs/{job_id}")["vertices"]
              if v["name"].startswith("Tenant")][0]
    (tm_id,) = {t["taskmanager-id"] for t in fc.rest(
        spec, f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]}
    (path,) = [t["path"] for t in fc.rest(spec, "/taskmanagers")["taskmanagers"]
               if t["id"] == tm_id]
    return tm_id, int(path.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def test_the_spare_taskmanager_takes_over_a_killed_ones_job(tmp_path):
    """`upm flink up --taskmanagers 2 --prometheus`, a job at parallelism 1 (one slot of one
    TaskManager): SIGKILL that TaskManager mid-stream and nothing else. The job restarts from
    its last checkpoint on the spare, every window is trained exactly once into the snapshots
    the engine-free core makes, and Prometheus (the shipped rules) fires UpmJobRestarting."""
    import signal

    from pipelines.ports import free_port_range
    from runners import flink_cluster as fc
    from runners.flink_progress import upm_counters
    from runners.monitoring import local_prometheus as lp
    from state.scenario import ScenarioSpec, generate
    from tests.core.servers import free_port
    from tests.flink.test_cluster import (PROFILE, assert_each_window_trained_once,
                                          completed_checkpoints, state, submit, upm, wait_for)

    store = tmp_path / "cluster"
    spec = fc.ClusterSpec(store=str(store), rest_port=free_port(), rpc_port=free_port(),
                          prometheus_ports=free_port_range(3), taskmanagers=2)
    prometheus = free_port()
    where = ["--store", str(store), "--rest-port", str(spec.rest_port),
             "--prometheus-port", str(prometheus)]
    upm("flink", "up", *where, "--rpc-port", str(spec.rpc_port), "--taskmanagers", "2",
        "--metrics-ports", spec.prometheus_ports, "--prometheus", "--scrape-interval", "1s")
    try:
        assert len(fc.taskmanager_pids(spec)) == 2
        # Long enough that the job is still running when the kill comes (the job trains the
        # first 500 windows within seconds; the whole input takes several times that).
        lines, expected = generate(ScenarioSpec(tenants=3, windows_per_tenant=6000, seed=5))
        src = tmp_path / "windows.jsonl"
        src.write_text("\n".join(lines) + "\n")
        out = tmp_path / "store"
        job_id = submit(spec, out, "--input", str(src), "--parallelism", "1", *PROFILE)
        wait_for(lambda: state(spec, job_id) == "RUNNING"
                 and completed_checkpoints(spec, job_id) >= 1
                 and upm_counters(spec.rest, job_id).get("trained", 0) > 500,
                 timeout=240, every=0.5)
        busy, port = taskmanager_of(spec, job_id)
        pids = fc.taskmanager_pids(spec)
        victim = listening_pid(port, pids)
        os.kill(victim, signal.SIGKILL)

        def restarted_on_the_spare():
            if fc.rest(spec, f"/jobs/{job_id}/checkpoints")["counts"]["restored"] < 1:
                return None
            if state(spec, job_id) not in ("RUNNING", "FINISHED"):
                return None
            return state(spec, job_id) == "FINISHED" or taskmanager_of(spec, job_id)[0] != busy
        wait_for(restarted_on_the_spare, timeout=300)

        def job_restarting():
            return [a for a in lp.query(f"http://127.0.0.1:{prometheus}",
                                        'ALERTS{alertname="UpmJobRestarting",alertstate="firing"}')
                    if a["metric"].get("job_name") == "upm_stream"]  # the reporter's spelling
        wait_for(job_restarting, timeout=180)

        wait_for(lambda: state(spec, job_id) in ("FINISHED", "FAILED"), timeout=600)
        assert state(spec, job_id) == "FINISHED"
        assert fc.taskmanager_pids(spec) == [p for p in pids if p != victim]  # none was added
        assert_each_window_trained_once(out, lines, expected)
    finally:
        upm("flink", "down", *where)
