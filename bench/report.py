"""One table of the last `make bench`: every row of bench/throughput.py (Flink venv),
bench/cluster_scaling.py (Flink venv), bench/backfill.py (Beam venv), bench/freshness.py and
bench/tenants_scale.py (Flink venv), each with its ratio and the target (issues 23 and 25) it
answers. The runtimes never share an environment, so each bench writes bench/results/<name>.json and this script (standard
library only) joins them.

    python3 bench/report.py [--markdown bench/results/bench.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provenance import RESULTS, provenance_line
IDENTITY = "identity keyed PyFlink job, p=1"
RIVER = "river StandardScaler|LogisticRegression"
CORE = "core (parse -> TenantPipeline, TensorFlow)"


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _target(name: str) -> tuple[str, float | None]:
    """(the target a row answers, the ratio or value it needs), or ("", None)."""
    if name == "upm flink job, p=1":
        return ">= 0.5x identity", 0.5
    if name.startswith("core (parse"):
        return ">= 2x River", 2.0
    if name == "backfill parquet, steady state":
        return ">= 100k windows/s", 100_000
    if "1000 tenants" in name:
        return ">= 0.8x 4 tenants", 0.8
    if "10000 tenants" in name or "100000 tenants" in name:
        return ">= 0.5x 4 tenants", 0.5
    if "dense tenant" in name:
        return ">= 0.5x 4 tenants", 0.5
    if "cluster" in name and name.endswith("p=2"):
        return ">= 1.7x p=1", 1.7
    return "", None


def rows() -> list[dict]:
    out = []
    thr = _load("throughput")
    if thr:
        for name, r in thr["rows"].items():
            out.append({"row": name, "value": r["windows_per_s"], "unit": "windows/s",
                        "ratio": r["ratio"], "vs": r["vs"]})
        n = thr.get("many_tenants", 10_000)
        if "peak_rss_mib_many_tenants" in thr:
            rss = thr["peak_rss_mib_many_tenants"]
            out.append({"row": f"mini-cluster JVM peak RSS, {n} tenants (4 tenants: "
                               f"{thr['peak_rss_mib_4_tenants']:.0f} MiB)", "value": rss,
                        "unit": "MiB", "ratio": None, "vs": None,
                        "target": ("TaskManager <= 2 GiB", rss <= 2048)})
        if "state_bytes_per_tenant" in thr:
            out.append({"row": f"keyed state per tenant, {n} tenants x 20 windows",
                        "value": thr["state_bytes_per_tenant"], "unit": "bytes", "ratio": None,
                        "vs": None, "target": ("", None)})
    cl = _load("cluster")
    if cl:
        for name, r in cl["rows"].items():
            out.append({"row": name, "value": r["windows_per_s"], "unit": "windows/s",
                        "ratio": r["ratio"], "vs": r["vs"]})
    bf = _load("backfill")
    if bf:
        for name, r in bf.get("rows", bf).items():  # (files before provenance: rows only)
            label = "backfill: streaming core (same windows)" if name == "streaming core" else name
            out.append({"row": label, "value": r["messages_per_s"], "unit": "windows/s",
                        "ratio": None if name == "streaming core" else r["vs_streaming_core"],
                        "vs": None if name == "streaming core" else
                        "backfill: streaming core (same windows)"})
    tn = _load("tenants")
    if tn:
        for name, r in tn["rows"].items():
            out.append({"row": name, "value": r["windows_per_s"], "unit": "windows/s",
                        "ratio": r["ratio"], "vs": r["vs"]})
            out.append({"row": f"{name}: peak RSS of the process tree", "value": r["peak_rss_mib"],
                        "unit": "MiB", "ratio": None, "vs": None,
                        "target": ("<= 4 GiB", r["peak_rss_mib"] <= 4096)
                        if r["tenants"] >= 100_000 else ("", None)})
            if r["checkpoint_bytes"]:
                out.append({"row": f"{name}: largest checkpoint ({r['checkpoint_ms']:,} ms), "
                                   f"{r['state_bytes_per_tenant']:,.0f} bytes a tenant",
                            "value": r["checkpoint_bytes"] / 2**20, "unit": "MiB",
                            "ratio": None, "vs": None, "target": ("", None)})
    fr = _load("freshness")
    if fr:
        out.append({"row": f"freshness p99 at {fr['rate_msgs_per_s']:.0f} msgs/s from Kafka",
                    "value": fr["p99_s"], "unit": "s", "ratio": None, "vs": None,
                    "target": ("p99 <= 5 s", fr["p99_s"] <= 5.0)})
    for r in out:
        if "target" in r:
            continue
        target, need = _target(r["row"])
        if need is None:
            r["target"] = ("", None)
        elif r["unit"] == "windows/s" and need > 100:
            r["target"] = (target, r["value"] is not None and r["value"] >= need)
        else:
            r["target"] = (target, r["ratio"] is not None and r["ratio"] >= need)
    return out


def _fmt(r: dict) -> tuple[str, str, str, str]:
    v = "n/a" if r["value"] is None else (f"{r['value']:.2f}" if r["unit"] == "s"
                                          else f"{r['value']:,.0f}")
    ratio = f"{r['ratio']:.2f}x {r['vs']}" if r["ratio"] is not None else ""
    target, met = r["target"]
    verdict = "" if met is None else ("met" if met else "missed")
    return f"{v} {r['unit']}", ratio, target, verdict


SOURCES = ("throughput", "cluster", "backfill", "freshness", "tenants")


def sources() -> list[str]:
    """One line per results file: when, where and at which commit it was measured."""
    return [f"- `bench/results/{name}.json`: {provenance_line(doc.get('provenance'))}"
            for name in SOURCES if (doc := _load(name))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = ap.parse_args()
    table = rows()
    if not table:
        raise SystemExit("no results in bench/results: run `make bench`")
    print("UPM benchmark")
    print(f"{'row':<60}{'measured':>18}  {'target':<22}{'':<8}ratio")
    for r in table:
        value, ratio, target, verdict = _fmt(r)
        print(f"{r['row']:<60}{value:>18}  {target:<22}{verdict:<8}{ratio}")
    if args.markdown:
        lines = ["| row | measured | ratio | target | |",
                 "|---|---:|---|---|---|"]
        for r in table:
            value, ratio, target, verdict = _fmt(r)
            cells = (r["row"], value, ratio, target, verdict)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines += ["", *sources()]
        args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(sources()))


if __name__ == "__main__":
    main()
