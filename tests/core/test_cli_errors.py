"""Every failure a user can cause at the command line is one line naming the problem, with exit
2 for usage and config and 1 for what failed; none starts a job or prints a traceback."""

import subprocess
import sys

import pytest


def upm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "runners.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def one_line(proc, code, *words):
    err = proc.stderr.strip()
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], err[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, err
    last = err.splitlines()[-1]
    for w in words:
        assert w in last, (w, last)
    return last


@pytest.fixture()
def registry_store(tmp_path):
    from model.lifecycle.registry import open_registry
    root = tmp_path / "store"
    open_registry(root).register({
        "snapshot_id": "acme-v000001", "tenant_id": "acme", "uri": "x", "sha256": "h",
        "size_bytes": 1, "format": "f", "compression": "zstd", "version": 1})
    return root


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[trainer\nlearning_rate = 0.1\n")
    one_line(upm("run", "--config", str(bad), "--output", str(tmp_path / "o")), 2, "bad.toml")
    one_line(upm("run", "--config", str(tmp_path / "missing.toml"), "--output",
                 str(tmp_path / "o")), 2, "missing.toml")
    one_line(upm("run", "--set", "drift.drift_threshold=nan", "--output", str(tmp_path / "o")),
             2, "drift.drift_threshold", "finite")
    one_line(upm("run", "--set", "trainer.learning_rate=nan", "--output", str(tmp_path / "o")),
             2, "trainer.learning_rate")
    v = upm("validate", "--store", str(tmp_path), "--set", "trainer.learning_rate=nan")
    assert v.returncode == 1 and "FAIL  config" in v.stdout and "learning_rate" in v.stdout


def test_usage_errors_are_one_line(tmp_path):
    one_line(upm("run", "--tenants", "0"), 2, "--tenants", "at least 1")
    one_line(upm("run", "--windows-per-tenant", "-5"), 2, "--windows-per-tenant")
    one_line(upm("run", "--input", "/nonexistent/upm", "--output", str(tmp_path / "o")), 2,
             "/nonexistent/upm", "no such file")
    one_line(upm("run", "--flink-conf", "novalue", "--output", str(tmp_path / "o")), 2,
             "KEY=VALUE")
    one_line(upm("run", "--set", "source.event_time=kafka", "--output", str(tmp_path / "o")), 2,
             "source.event_time", "--kafka-topic")
    one_line(upm("run", "--set", "source.event_time=broker", "--output", str(tmp_path / "o")), 2,
             "source.event_time", "window_end, kafka")


def test_records_of_an_earlier_run_are_never_wiped_silently(tmp_path):
    out = tmp_path / "out"
    (out / "records" / "stats").mkdir(parents=True)
    (out / "records" / "stats" / "part-0.jsonl").write_text("{}\n")
    one_line(upm("run", "--output", str(out)), 2, "earlier run", "--append", "--fresh")
    assert (out / "records" / "stats" / "part-0.jsonl").exists()


def test_registry_errors_are_one_line(tmp_path, registry_store):
    one_line(upm("registry", "verify", "--store", str(tmp_path / "no" / "such")), 1, "no store")
    one_line(upm("registry", "list", "--store", str(tmp_path / "no" / "such")), 1, "no store")
    one_line(upm("registry", "history", "--tenant", "nosuch", "--store", str(registry_store)),
             1, "nosuch", "acme")
    one_line(upm("promote", "--tenant", "acme", "--to", "staging", "--actor", "a", "--reason",
                 "r", "--store", str(tmp_path / "no" / "such")), 1, "no store")


def test_root_cause_finds_the_python_exception_in_flink_text():
    from runners.errors import root_cause
    text = ("org.apache.flink.runtime.client.JobExecutionException: Job execution failed.\n"
            "Caused by: java.lang.RuntimeException: Error while processing\n"
            "Caused by: pemja.core.PythonException: <class 'ValueError'>: bad thing\n"
            "\tat /x/site-packages/pyflink/fn_execution/operations.process(operations.py:9)\n"
            "\tat /work/main/model/registry.read(registry.py:78)\n"
            "\tat pemja.core.object.PyIterator.next(Native Method)\n")
    assert root_cause(Exception(text)) == "ValueError: bad thing (in read, model/registry.py line 78)"
    assert root_cause(Exception("a\nCaused by: java.io.IOException: disk full\n")) == \
        "java.io.IOException: disk full"
