"""`upm run` on its embedded default (the generator), as `make run` starts it, only smaller."""

import json
import os
import subprocess
import sys

KEYS = ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending", "snapshots",
        "last_version", "last_sha256", "drift_p95", "quarantines")


def test_embedded_default_prints_progress_and_a_summary_that_adds_up(tmp_path):
    out = tmp_path / "upm-data"
    system_tmp = tmp_path / "system-tmp"  # the run's system temporary directory
    system_tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", "--output", str(out), "--tenants", "2",
         "--windows-per-tenant", "700", "--summary-json", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(system_tmp)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "embedded generator" in proc.stdout and "web UI http://127.0.0.1:" in proc.stdout
    assert "TOTAL" in proc.stdout
    noise = [w for w in ("FutureWarning", "cuInit", "Traceback") if w in proc.stdout + proc.stderr]
    assert not noise, proc.stderr[-3000:]  # the console carries UPM's own lines
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary) >= {"tenants", "totals"}
    assert set(summary["tenants"]) == set(summary["expected"]["tenants"]) == {"acme", "globex"}
    for name, t in summary["tenants"].items():
        assert set(KEYS) <= set(t), name
        assert t["windows_in"] == (t["trained"] + t["duplicates"] + t["late"]
                                   + t["dead_letters"] + t["pending"])
        exp = summary["expected"]["tenants"][name]
        assert {k: t[k] for k in ("trained", "duplicates", "late", "dead_letters", "pending")} \
            == {k: exp[k] for k in ("trained", "duplicates", "late", "dead_letters", "pending")}
        assert t["snapshots"] == t["trained"] // 500 and t["last_version"] == t["snapshots"]
    assert summary["totals"]["balanced"]
    assert (out / "input" / "generated.jsonl").exists()
    assert (out / "flink" / "log").is_dir()
    # nothing left in the system's temporary directory, no autograph module in the run's
    assert not list(system_tmp.iterdir()), list(system_tmp.iterdir())[:10]
    assert not list((out / "flink" / "tmp").glob("__autograph_generated_file*"))


def test_bad_config_is_refused_before_anything_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", "--output", str(tmp_path),
         "--set", "trainer.batch_size=0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "trainer.batch_size" in proc.stderr
