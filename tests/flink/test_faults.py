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
