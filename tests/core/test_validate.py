import socket
import subprocess
import sys

from runners.validate import validate


def names_failed(checks):
    return [c.name for c in checks if not c.ok]


def test_good_setup_passes(tmp_path):
    checks = validate(store=str(tmp_path))
    assert names_failed(checks) == [] and len(checks) == 5


def test_each_broken_part_is_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[trainer]\nbatch_size = -1\n")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's parent should be")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    checks = validate(config=str(cfg), store=str(blocker / "store"),
                      flink_rest=f"http://127.0.0.1:{dead}", kafka=f"127.0.0.1:{dead}")
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert "trainer.batch_size" in failed["config"]
    assert set(failed) == {"config", "store writable", "flink rest", "kafka"}


def test_cli_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "runners.cli", "validate", "--store", str(tmp_path)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "5/5 checks passed" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "runners.cli", "validate", "--store", str(tmp_path),
                          "--set", "drift.drift_threshold=3"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "FAIL  config" in bad.stdout and "drift.drift_threshold" in bad.stdout
