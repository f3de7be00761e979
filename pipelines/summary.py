"""The end-of-run summary, computed from the records a job wrote (same for every engine).

Per tenant: windows in, trained, duplicates, late, dead letters, pending (awaiting a label),
snapshots written (last version and sha256), drift p95, quarantines. The accounting identity

    windows_in = trained + duplicates + late + dead_letters + pending + paused_skipped

is checked per tenant and in total; dead letters without a usable tenant count only in totals.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

COUNT_KEYS = ("windows_in", "trained", "duplicates", "late", "dead_letters", "pending",
              "paused_skipped")


def read_records(records_dir: str | Path, kind: str) -> list[dict]:
    """All committed JSON-line records of one kind (in-progress files start with '.')."""
    d = Path(records_dir) / kind
    out = []
    if d.exists():
        for f in sorted(d.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def summarize(records_dir: str | Path) -> dict:
    tenants: dict[str, dict] = defaultdict(lambda: {
        "windows_in": 0, "trained": 0, "duplicates": 0, "late": 0, "dead_letters": 0,
        "pending": 0, "paused_skipped": 0, "gaps": 0, "feedback_in": 0, "snapshots": 0,
        "last_version": 0, "last_sha256": None, "last_snapshot_id": None, "loss": None,
        "drift_p95": None, "quarantines": 0, "recoveries": 0, "snapshots_refused": 0,
        "scores": {}})
    unattributed = 0
    for s in read_records(records_dir, "stats"):
        t, c = tenants[s["tenant_id"]], s["counters"]
        if s["operator"] == "replay":
            t["windows_in"] += c["received"]
            t["duplicates"] += c["duplicates"]
            t["late"] += c["late"]
            t["gaps"] += c["gaps"]
        elif s["operator"] == "trainer":
            # a window whose label the head refused is a dead letter, and was received too
            t["windows_in"] -= c.get("label_refused", 0)
            t["head"] = s.get("head")
            t["trained"] += c["trained"]
            t["pending"] += s["pending"]
            t["paused_skipped"] += c["paused_skipped"]
            t["feedback_in"] += c["feedback"]
            t["loss"] = s.get("loss")
            t["scores"] = s.get("scores") or {}
        elif s["operator"] == "drift":
            t["drift_p95"] = s.get("drift_p95")
    for d in read_records(records_dir, "dead_letters"):
        if d.get("tenant_id"):
            tenants[d["tenant_id"]]["dead_letters"] += 1
            tenants[d["tenant_id"]]["windows_in"] += 1
        else:
            unattributed += 1
    for r in sorted(read_records(records_dir, "snapshots"), key=lambda r: r["version"]):
        t = tenants[r["tenant_id"]]
        t["snapshots"] += 1
        t["last_version"], t["last_sha256"], t["last_snapshot_id"] = (
            r["version"], r["sha256"], r["snapshot_id"])
    for r in read_records(records_dir, "refusals"):
        if r.get("event") == "upm.snapshot.refused":
            tenants[r["tenant_id"]]["snapshots_refused"] += 1
    for q in read_records(records_dir, "quarantines"):
        key = "quarantines" if q["event"] == "ai.upm.drift.quarantine" else "recoveries"
        tenants[q["tenant_id"]][key] += 1
    totals = {k: sum(t[k] for t in tenants.values()) for k in
              (*COUNT_KEYS, "gaps", "feedback_in", "snapshots", "quarantines", "recoveries",
               "snapshots_refused")}
    totals["dead_letters"] += unattributed
    totals["windows_in"] += unattributed
    totals["unattributed_dead_letters"] = unattributed
    p95s = [t["drift_p95"] for t in tenants.values() if t["drift_p95"] is not None]
    totals["drift_p95"] = max(p95s) if p95s else None
    totals["last_version"] = max((t["last_version"] for t in tenants.values()), default=0)
    totals["last_sha256"] = None
    for t in tenants.values():
        t["balanced"] = balanced(t)
    totals["balanced"] = balanced(totals)
    return {"tenants": dict(sorted(tenants.items())), "totals": totals}


def balanced(counts: dict) -> bool:
    return counts["windows_in"] == sum(counts[k] for k in COUNT_KEYS[1:])


def shown_tenants(tenants: dict, max_rows: int) -> list[str]:
    """The tenants a table of at most `max_rows` shows: the unbalanced, then the quarantined,
    then the busiest, in name order."""
    if len(tenants) <= max_rows:
        return list(tenants)
    rank = sorted(tenants, key=lambda n: (tenants[n]["balanced"], not tenants[n]["quarantines"],
                                          -tenants[n]["windows_in"], n))
    return sorted(rank[:max_rows])


def format_table(summary: dict, max_rows: int = 40) -> str:
    """The per-tenant table and its TOTAL row; past `max_rows` tenants, the ones that most need
    a look (`shown_tenants`) and a line saying how many are left out."""
    cols = ("head", "windows_in", "trained", "duplicates", "late", "dead_letters", "pending",
            "snapshots", "last_version", "accuracy", "mae", "drift_p95", "quarantines")
    head = ["tenant", *cols, "last_sha256", "ok"]
    rows = []
    tenants = summary["tenants"]
    shown = shown_tenants(tenants, max_rows)
    for name, t in [*((n, tenants[n]) for n in shown), ("TOTAL", summary["totals"])]:
        cells = [name]
        for c in cols:
            v = t.get(c, t.get("scores", {}).get(c))  # accuracy, mae: prequential, per tenant
            cells.append("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        cells.append((t.get("last_sha256") or "-")[:12])
        cells.append("yes" if t["balanced"] else "NO")
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:>{w}}}" if i else f"{{:<{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), *(fmt.format(*r) for r in rows)]
    if len(shown) < len(tenants):
        shown_set = set(shown)
        left = [t for n, t in tenants.items() if n not in shown_set]
        lines.insert(-1, f"... {len(left)} more tenants, "
                     f"{'all' if all(t['balanced'] for t in left) else 'NOT all'} balanced "
                     "(the unbalanced, quarantined and busiest are shown; --summary-json has "
                     "every one)")
    return "\n".join(lines)
