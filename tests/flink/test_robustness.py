"""The Flink job keeps going on hostile input while its metrics are read far more often than the
CLI reads them: one run over a scenario mixed with fuzzed lines (seeded mutations, random bytes,
random JSON, and the single lines that once killed the job), with a thread polling every UPM
metric through the REST API with the metric fetcher at 50 ms. Before the gauges were pushed
values this crashed the JVM (SIGSEGV in libpython from Flink's metrics thread)."""

import json
import random
import re
import subprocess
import sys
import threading
import urllib.request

import pytest

from pipelines.ports import free_port
from pipelines.summary import read_records
from runners.embedded import DEMO_PROFILE, profile_toml
from state.scenario import ScenarioSpec, generate

SPEC = ScenarioSpec(tenants=3, windows_per_tenant=1500, seed=5)
DAY_MS = 86_400_000


def killers(lines: list[str]) -> list[str]:
    """The lines of issue 10, each of which once failed the job, plus other classics."""
    acme = json.loads(next(line for line in lines if '"acme"' in line and "features" in line))
    globex = json.loads(next(line for line in lines if '"globex"' in line and "features" in line))

    def variant(base, **changes):
        return json.dumps({**base, **changes})

    return [
        variant(acme, window_id="k-bigint").replace('"features": {', '"features": {"big": '
                                                     + "9" * 401 + ", "),
        "[" * 100_000,
        variant(acme, window_id="k-2p70", window_end=1 << 70),
        variant(acme, window_id="k-9999", window_end="9999-12-31T23:59:59Z"),
        variant(acme, window_id="k-secs", window_start=1795000000, window_end=1795000001),
        # ISO 8601 but not RFC 3339: Python reads it, the job's Java time step does not
        variant(acme, window_id="k-week", window_end="2026-W47-7T00:00:00Z"),
        # 30 days ahead of its tenant: a dead letter (bad_timestamp: future), not a new frontier
        variant(globex, window_id="k-future", window_end=globex["window_end"] + 30 * DAY_MS
                if isinstance(globex["window_end"], int) else "2026-12-30T00:00:00Z"),
        "\x00\x00\x00", "[1, 2, 3]", "42", "{}", '"just a string"', "null",
        variant(acme, window_id="k-nested", features={"a": {"b": [1, 2]}}),
        variant(acme, window_id="k-many", features={f"f{i}": 1.0 for i in range(5000)}),
        variant(acme, window_id="k-path", tenant_id="../etc"),
        variant(acme, window_id="k-nan").replace('"features": {', '"features": {"x": NaN, '),
    ]


def fuzz(lines: list[str], rng: random.Random, n: int) -> list[str]:
    out = []
    valid = [line for line in lines if "features" in line]
    for i in range(n):
        kind = i % 3
        if kind == 0:  # a valid line of a tenant of its own, then a few bytes changed
            chars = list(re.sub(r'"tenant_id": "[^"]*"', f'"tenant_id": "fuzz-{i}"',
                                rng.choice(valid)))
            for _ in range(rng.randint(1, 6)):
                chars[rng.randrange(len(chars))] = rng.choice('{}[]",:0123456789.eE-+ \\ux\x00')
            out.append("".join(chars))
        elif kind == 1:  # random bytes, decoded as the file source decodes them
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
            out.append(raw.decode("utf-8", "replace").replace("\n", " ").replace("\r", " "))
        else:  # random JSON
            out.append(json.dumps(_random_json(rng, 4)))
    return out


def _random_json(rng, depth):
    r = rng.random()
    if depth == 0 or r < 0.4:
        return rng.choice([None, True, 1 << rng.randint(0, 80), rng.random() * 1e308,
                           "x" * rng.randint(0, 30), -1, "2026-11-22T10:00:00Z"])
    if r < 0.6:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    keys = ["window_id", "tenant_id", "window_start", "window_end", "features", "label",
            "observed_at", "zz"]
    return {rng.choice(keys): _random_json(rng, depth - 1) for _ in range(rng.randint(0, 6))}


class MetricsPoller(threading.Thread):
    """Reads every metric of every vertex, and the TaskManagers' metrics, as fast as it can."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base, self.stop, self.reads, self.saw_tenant_values = base, threading.Event(), 0, 0
        self.errors: list[str] = []

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return json.load(r)

    def run(self):
        while not self.stop.is_set():
            try:
                for job in self.get("/jobs/overview")["jobs"]:
                    for v in self.get(f"/jobs/{job['jid']}")["vertices"]:
                        path = f"/jobs/{job['jid']}/vertices/{v['id']}/subtasks/metrics"
                        ids = [m["id"] for m in self.get(path)]
                        for i in range(0, len(ids), 40):  # a URL of every id is too long
                            got = self.get(path + "?get=" + ",".join(ids[i:i + 40]))
                            self.saw_tenant_values += sum(".tenant." in m["id"] for m in got)
                            self.reads += 1
                for tm in self.get("/taskmanagers")["taskmanagers"]:
                    self.get(f"/taskmanagers/{tm['id']}/metrics")
            except (OSError, ValueError, KeyError) as e:
                # the cluster is starting or gone; the run's exit code is what counts
                self.errors = (self.errors + [repr(e)])[-5:]
                self.stop.wait(0.05)


@pytest.fixture(scope="module")
def fuzzed_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    lines, expected = generate(SPEC)
    rng = random.Random(10)
    bad = killers(lines) + fuzz(lines, rng, 300)
    mixed = list(lines)
    for line in bad:
        mixed.insert(rng.randrange(len(mixed) // 10, len(mixed)), line)
    (d / "in.jsonl").write_text("\n".join(mixed) + "\n")
    (d / "upm.toml").write_text(profile_toml(DEMO_PROFILE))
    out = d / "out"
    port = free_port()
    cmd = [sys.executable, "-m", "runners.cli", "run", "--input", str(d / "in.jsonl"),
           "--output", str(out), "--config", str(d / "upm.toml"), "--parallelism", "2",
           "--summary-json", str(out / "summary.json"), "--rest-port", str(port),
           "--flink-conf", "metrics.fetcher.update-interval=50"]
    poller = MetricsPoller(f"http://127.0.0.1:{port}")
    poller.start()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    finally:
        poller.stop.set()
        poller.join(timeout=10)
    return mixed, expected, out, proc, poller




def test_the_job_survives_fuzzed_input_and_metric_polling(fuzzed_run):
    _, _, _, proc, poller = fuzzed_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SIGSEGV" not in proc.stdout + proc.stderr
    # --parallelism 2 on the mini-cluster runs, and says in one line that it adds no cores
    notes = [line for line in proc.stdout.splitlines() if "adds no cores" in line]
    assert len(notes) == 1 and "upm flink up --taskmanagers 2" in notes[0], proc.stdout[:2000]
    # the poller did read, the tenant values too
    assert poller.reads > 20 and poller.saw_tenant_values > 0, poller.errors


def test_every_line_is_accounted_for(fuzzed_run):
    mixed, expected, out, proc, _ = fuzzed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    tot = summary["totals"]
    assert tot["balanced"] and all(t["balanced"] for t in summary["tenants"].values())
    assert tot["windows_in"] + tot["feedback_in"] == len(mixed)
    for tenant, exp in expected.tenants.items():
        got = summary["tenants"][tenant]
        # hostile lines never reach a scenario tenant's training: its decisions are unchanged
        for k in ("trained", "duplicates", "late", "pending", "gaps"):
            assert got[k] == exp[k], (tenant, k, got[k], exp[k])


def test_killer_lines_become_dead_letters_with_their_reasons(fuzzed_run):
    _, _, out, proc, _ = fuzzed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    reasons = [d["reason"] for d in read_records(out / "records", "dead_letters")]
    by_id = {}
    for d in read_records(out / "records", "dead_letters"):
        m = re.search(r'"window_id": ?"(k-[a-z0-9]+)"', d["raw"])
        if m:
            by_id[m.group(1)] = d["reason"]
    assert by_id["k-bigint"].startswith("not_finite")
    assert by_id["k-2p70"].startswith("bad_timestamp") and "outside" in by_id["k-2p70"]
    assert by_id["k-9999"].startswith("bad_timestamp") and "outside" in by_id["k-9999"]
    assert "epoch seconds" in by_id["k-secs"]
    assert by_id["k-week"].startswith("read_differently: window_end")
    assert by_id["k-future"].startswith("bad_timestamp: future")
    assert by_id["k-many"].startswith("oversized")
    assert by_id["k-path"].startswith("unsafe_tenant_id")
    assert any(r.startswith("oversized: JSON nested") for r in reasons)
    assert not [r for r in reasons if r.startswith("internal")], "an unforeseen exception"


def test_a_failed_job_is_one_line_naming_the_python_exception(tmp_path):
    """A store under a regular file fails the Trainer; the user sees the Python exception and
    where it was raised, not 118 lines of Java."""
    lines, _ = generate(ScenarioSpec(tenants=1, windows_per_tenant=50, seed=1))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "blocker").write_text("a file, not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", "--input", str(tmp_path / "in.jsonl"),
         "--output", str(tmp_path / "out"), "--quiet",
         "--set", f"snapshots.base_path={tmp_path / 'blocker' / 'store' / 'snapshots'}"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("upm run: the Flink job failed: NotADirectoryError"), last
    assert ".py line" in last and "Flink log" in last and "Traceback" not in proc.stderr
