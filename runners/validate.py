"""`upm validate`: check a setup before enabling the job, printing one line per check and
exiting non-zero if any fails (the seeds' `mix thunderline.upm.validate`, translated).

Checks: config keys and ranges; the store writable; compression codecs present; a drift
calculation sanity check (sketch p95 against numpy); a replay-ordering sanity check; and, when
asked, reachability of the Flink REST endpoint, Kafka bootstrap servers and other stores.
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _run(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except Exception as e:  # every failure becomes a named, explained check
        return Check(name, False, f"{type(e).__name__}: {e}")


def check_config(path: str | None, overrides: list[str]) -> str:
    from runners.job_flags import load_config
    cfg = load_config(path, overrides)
    return (f"{path or 'defaults'}: snapshot_interval {cfg.trainer.snapshot_interval}, "
            f"drift threshold {cfg.drift.drift_threshold}, compression {cfg.snapshots.compression}")


def check_store(store: str) -> str:
    root = Path(store)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=root, prefix=".validate-") as f:
        f.write(b"ok")
        f.flush()
        os.fsync(f.fileno())
    return f"{root.resolve()} is writable"


def check_codecs() -> str:
    import numpy as np

    from model.snapshot import COMPRESSIONS, Snapshot, decode, encode
    snap = Snapshot({"snapshot_id": "validate"}, {"w": np.arange(64, dtype=np.float32)})
    for c in COMPRESSIONS:
        enc = encode(snap, c)
        assert np.array_equal(decode(enc.data, enc.sha256).arrays["w"], snap.arrays["w"]), c
    return "zstd, gzip, none round-trip with sha256"


def check_drift() -> str:
    import numpy as np

    from state.drift import drift_score
    from state.sketch import QuantileSketch
    values = np.random.default_rng(0).random(10_000)
    sk = QuantileSketch()
    sk.extend(values)
    exact, got = float(np.quantile(values, 0.95)), sk.quantile(0.95)
    if abs(got - exact) > 0.01 * exact:
        raise AssertionError(f"sketch p95 {got} vs exact {exact}")
    assert abs(drift_score(0.5, 0.7) - 0.2) < 1e-9 and drift_score([1, 0], [-1, 0]) == 1.0
    return f"p95 {got:.4f} vs exact {exact:.4f}; numeric and structured scores ok"


def check_replay() -> str:
    from state.records import FeatureWindow
    from state.replay import ReplayBuffer
    rb = ReplayBuffer("validate")
    order = [0, 2, 1, 3, 3, 5, 4]
    released = []
    for i in order:
        released += rb.add(FeatureWindow(f"w{i}", "validate", i * 1000, i * 1000 + 1000,
                                         {"x": 1.0}, 1.0)).released
    released += rb.flush().released
    ids = [w.window_id for w in released]
    assert ids == [f"w{i}" for i in range(6)], ids
    return "out-of-order windows released in order, duplicate dropped"


def check_flink(rest: str) -> str:
    with urllib.request.urlopen(rest.rstrip("/") + "/overview", timeout=3) as r:
        import json
        ov = json.load(r)
    return f"{rest}: Flink {ov.get('flink-version')}, {ov['taskmanagers']} TaskManager(s)"


def check_tcp(name: str, hostport: str) -> str:
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3):
        pass
    return f"{name} {hostport} accepts connections"


def validate(config: str | None = None, overrides: list[str] | None = None,
             store: str = "./upm-data", flink_rest: str | None = None,
             kafka: str | None = None) -> list[Check]:
    checks = [
        _run("config", lambda: check_config(config, overrides or [])),
        _run("store writable", lambda: check_store(store)),
        _run("compression codecs", check_codecs),
        _run("drift calculation", check_drift),
        _run("replay ordering", check_replay),
    ]
    if flink_rest:
        checks.append(_run("flink rest", lambda: check_flink(flink_rest)))
    if kafka:
        for hp in kafka.split(","):
            checks.append(_run("kafka", lambda hp=hp: check_tcp("kafka broker", hp.strip())))
    return checks


def cmd_validate(args) -> int:
    checks = validate(args.config, args.set, args.store, args.flink_rest, args.kafka)
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.name:<20} {c.detail}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


def add_commands(sub) -> None:
    v = sub.add_parser("validate", help="check config, storage, codecs, drift, replay, endpoints")
    v.add_argument("--config")
    v.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    v.add_argument("--store", default="./upm-data")
    v.add_argument("--flink-rest", help="e.g. http://127.0.0.1:8081")
    v.add_argument("--kafka", help="bootstrap servers host:port[,host:port]")
    v.set_defaults(func=cmd_validate)
