"""`upm registry|promote|rollback|retention|status|keys|export`: governance from the command line.

Every command takes `--store PATH` (default ./upm-data): the store root holding `snapshots/`,
`registry/models.json` and `events/governance.jsonl`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from datetime import datetime, timezone

from model.lifecycle.governance import Governance, GovernanceError, JsonLinesSink, events_path
from model.lifecycle.policy import DEFAULT_POLICY_TOML, Policy, PolicyError
from model.lifecycle.registry import STAGES, TenantView, open_registry
from model.lifecycle.retention import RetentionRule, apply as apply_retention, plan as plan_retention
from model.lifecycle.signing import SignatureError, Verifier, generate_keypair
from model.snapshot import sha256_hex
from model.lifecycle.store import open_store
from state.trainer import FRESHNESS_SLO_MS
from runners.errors import UserError


def _when(ms) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _open(args):
    loc = str(args.store)
    if "://" not in loc and not (Path(loc) / "registry" / "models.json").exists():
        raise UserError(f"no store at {loc} (no registry/models.json there; --store names the "
                        "directory a job wrote, e.g. its --output)", exit_code=1)
    store = open_store(args.store)
    registry = open_registry(args.store)
    return store, registry


def _governance(args) -> Governance:
    store, registry = _open(args)
    policy = Policy.load(getattr(args, "policy", None))
    if getattr(args, "config", None):
        from runners.job_flags import load_config
        policy = policy.with_allowlist(load_config(args.config).features.unified_model)
    return Governance(registry, store, policy, Verifier.from_env(),
                      JsonLinesSink(events_path(args.store)))


def cmd_registry(args) -> int:
    store, registry = _open(args)
    doc = registry.read()
    views = {t: TenantView(t, e) for t, e in doc["tenants"].items()}
    tenants = [args.tenant] if getattr(args, "tenant", None) else sorted(views)
    for t in tenants:
        if t not in views:
            known = ", ".join(sorted(views)) or "none"
            raise UserError(f"no tenant {t!r} in the registry of {args.store} (tenants: {known})",
                            exit_code=1)
    if args.action == "list":
        print(f"{'tenant':<12}{'artifact':<20}{'ver':>5}{'mode':>9}{'head':>13}{'loss':>10}"
              f"{'acc':>8}{'mae':>10}{'drift p95':>11}{'samples':>9}  stages")
        for t in tenants:
            v = views[t]
            for a in sorted(v.artifacts(), key=lambda a: a.id):
                at = [s for s in STAGES if v.pointer(s) == a.id]
                flags = (" quarantined" if a.quarantined else "") + (
                    " rolled-back" if a.rolled_back else "")
                m = a.metrics
                print(f"{t:<12}{a.id:<20}{a.version:>5}{a.mode or '-':>9}{a.head or '-':>13}"
                      f"{_num(m.get('loss')):>10}{_num(m.get('accuracy')):>8}"
                      f"{_num(m.get('mae')):>10}{_num(m.get('drift_p95')):>11}"
                      f"{m.get('drift_samples', 0):>9}  {','.join(at)}{flags}")
    elif args.action == "show":
        print(json.dumps({t: doc["tenants"][t] for t in tenants}, indent=2))
    elif args.action == "history":
        for t in tenants:
            for h in views[t].history:
                print(f"{_when(h['timestamp'])}  {t:<10} {h['action']:<10} "
                      f"{h.get('from_stage') or '-':>8} -> {h.get('to_stage') or '-':<8} "
                      f"{h.get('artifact_id') or '-':<18} by {h['actor']}: {h['reason']}")
    elif args.action == "verify":
        verifier = Verifier.from_env()
        bad = unsigned = 0
        for t in tenants:
            for a in sorted(views[t].artifacts(), key=lambda a: a.id):
                aid = a.id
                try:
                    actual = sha256_hex(store.get_bytes(a.uri))
                    ok = actual == a.sha256
                    note = "sha256 ok" if ok else f"SHA256 MISMATCH (stored bytes hash to {actual})"
                except OSError as e:
                    ok, note = False, f"MISSING ({e})"
                if ok and not a.signature:
                    unsigned += 1
                    note += ", UNSIGNED"
                    ok = not args.require_signed
                elif ok and not verifier.keys:
                    unsigned += 1
                    note += ", signature NOT CHECKED (no UPM_VERIFY_KEY_FILES)"
                    ok = not args.require_signed
                elif ok:
                    try:
                        verifier.verify(aid, a.sha256, a.signature)
                        note += ", signature ok"
                    except SignatureError as e:
                        ok, note = False, f"BAD SIGNATURE ({e})"
                bad += not ok
                print(f"{'ok ' if ok else 'BAD'} {t:<12}{aid:<20}{note}")
        print(f"{bad} bad artifact(s), {unsigned} without a checked signature"
              f"{' (refused: --require-signed)' if args.require_signed and unsigned else ''}")
        return 1 if bad else 0
    return 0


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def cmd_promote(args) -> int:
    gov = _governance(args)
    try:
        ev = gov.promote(args.tenant, args.to, args.snapshot, args.actor, args.reason,
                         role=args.role, ack=args.ack)
    except GovernanceError as e:
        print(f"upm promote: {e}", file=sys.stderr)
        return 1
    if ev is None:
        print(f"{args.tenant}/{args.to} already points to that artifact: nothing to do")
    else:
        print(f"{args.tenant}/{args.to} -> {ev['snapshot_id']} (v{ev['version']}; was "
              f"{ev['previous_snapshot_id']})")
    return 0


def cmd_rollback(args) -> int:
    gov = _governance(args)
    try:
        ev = gov.rollback(args.tenant, args.stage, args.actor, args.reason, args.from_snapshot)
    except GovernanceError as e:
        print(f"upm rollback: {e}", file=sys.stderr)
        return 1
    if ev is None:
        print(f"{args.tenant}/{args.stage}: nothing to roll back")
    else:
        print(f"{args.tenant}/{args.stage}: {ev['from_snapshot_id']} -> {ev['to_snapshot_id']}")
    return 0


def cmd_retention(args) -> int:
    store, registry = _open(args)
    rule = RetentionRule(args.keep_best, args.metric, args.milestone_every, args.retention_days)
    total = 0
    for t, view in registry.views().items():
        if args.apply:
            gone = apply_retention(registry, store, t, rule, args.actor)
            for a in gone:
                print(f"deleted {t}/{a}")
        else:
            gone = plan_retention(view, registry.now_ms(), rule)
            for a in gone:
                print(f"would delete {t}/{a}  {view.artifact(a).uri}")
        total += len(gone)
    print(f"{total} artifact(s) {'deleted' if args.apply else 'would be deleted (dry run; --apply deletes)'}")
    return 0


def cmd_status(args) -> int:
    store, registry = _open(args)
    views = registry.views()
    now = registry.now_ms()
    for t, e in views.items():
        arts = e.artifacts()
        print(f"== {t}")
        for s in STAGES:
            a = e.artifact(e.pointer(s))
            print(f"   {s:<8} {e.pointer(s) or '-':<20} {'v' + str(a.version) if a else ''}"
                  f"{'  since ' + _when(e.since(s)) if e.pointer(s) else ''}")
        if arts:
            newest = arts[-1]
            age = (now - newest.registered_at) / 1000
            print(f"   newest snapshot v{newest.version} registered {age:.0f}s ago "
                  f"(event time {_when(newest.created_at)})")
            trend = [a.metrics["drift_p95"] for a in arts if a.metrics["drift_p95"] is not None]
            if trend:
                print("   drift p95 by version: " + " ".join(f"{x:.3f}" for x in trend[-8:]))
            metric = _score_metric(arts)
            if metric:
                vals = [(a.version, a.metrics[metric]) for a in arts
                        if a.metrics.get(metric) is not None]
                print(f"   prequential {metric} by version (the windows each closes): "
                      + " ".join(f"v{v} {x:.3f}" for v, x in vals[-8:]))
            for a in arts[-3:]:
                ch = a.metrics.get("challenge")
                if ch:
                    m = "log_loss" if "log_loss" in ch["candidate"] else "mae"
                    print(f"   v{a.version} vs active {ch['champion_snapshot_id']} "
                          f"on the same {ch['candidate'].get('n')} windows: {m} "
                          f"{_num(ch['candidate'].get(m))} vs {_num(ch['champion'].get(m))}")
        for h in quarantines(e)[-3:]:
            print(f"   quarantine {_when(h['timestamp'])} {h['artifact_id']}: {h['reason']}")
        if e.quarantine:
            print(f"   QUARANTINED: {e.quarantine['drift_window_id']} "
                  f"(recommendation {e.quarantine['recommendation']})")
        for aid, rep in sorted(e.adoption.items()):
            print(f"   adapter {aid}: {rep.get('stage')} {rep.get('snapshot_id')} "
                  f"(v{rep.get('version')}), failures {rep.get('failures', 0)}"
                  f"{', last error ' + rep['last_error'] if rep.get('last_error') else ''}")
    if args.plot:
        plot_status(views, args.plot, now)
        print(f"plot written to {args.plot}")
    return 0


def _score_metric(arts) -> str | None:
    """The prequential score the artifacts carry: accuracy for a classifier, else MAE."""
    for key in ("accuracy", "mae"):
        if any(a.metrics.get(key) is not None for a in arts):
            return key
    return None


def runs_of(trend: list[list]) -> list[list[list]]:
    """A drift trend split into runs: a point whose event time is not after the one before it
    starts a new run (a second run into the same store measures the same event times again).
    Each run is in event-time order, without repeated points."""
    runs: list[list[list]] = []
    for p in trend:
        if not runs or p[0] <= runs[-1][-1][0]:
            if runs and p == runs[-1][-1]:
                continue
            runs.append([])
        runs[-1].append(p)
    return runs


def quarantines(view: TenantView) -> list[dict]:
    """The tenant's quarantine history entries, one per artifact and reason (a second run over
    the same input quarantines the same snapshot again: listed once, at its first time)."""
    seen, out = set(), []
    for h in view.history:
        key = (h.get("artifact_id"), h.get("reason"))
        if h["action"] == "quarantine" and key not in seen:
            seen.add(key)
            out.append(h)
    return out


def drift_series(view: TenantView) -> list[dict]:
    """The drift panel's data, one entry per run: what the rule in force judged at each
    evaluation and the level that raises a quarantine there, as dashboard UPM-001 draws them.
    Relative rule: the level (the recent mean score) and the raise level (the tenant's own
    reference plus its margin; absent while there is no reference). Absolute rule: the p95 and
    the threshold. Points recorded before the rule was (a store written by an older version):
    the p95 alone, labelled so, with no line the rule did not draw."""
    out = []
    for run in runs_of(view.drift_trend):
        rule = next((p[6] for p in run if len(p) > 6 and p[6]), None)
        judged = [p[4] if rule and p[4] is not None else p[1] for p in run]
        raise_at = [p[5] if rule and len(p) > 5 else None for p in run]
        label = {"relative": "level (recent mean score)", "absolute": "p95 of the scores",
                 None: "p95 of the scores (rule not recorded)"}[rule]
        out.append({"rule": rule, "x": [p[0] for p in run], "judged": judged,
                    "raise_at": raise_at, "label": label})
    return out


def _event_time_of(entry: dict, artifact) -> int | None:
    """Where a history entry goes on the event-time axis: a quarantine at the end of the drift
    window that raised it, a promotion or rollback at the end of the snapshot it moved to."""
    window = entry.get("drift_window_id")  # "<tenant>/<start>-<end>", ms
    if window:
        return int(window.rsplit("-", 1)[1])
    if artifact is None:
        return None
    return artifact.window_end or artifact.created_at


def freshness_rows(view: TenantView, now_ms: int) -> list[tuple[str, float, float | None]]:
    """(stage, age in seconds of the snapshot it points to, the stage's SLO in seconds or None)
    for every stage that points to a snapshot."""
    rows = []
    for s in STAGES:
        a = view.artifact(view.pointer(s))
        if a is None:
            continue
        slo = FRESHNESS_SLO_MS.get(s)
        rows.append((s, max(0.001, (now_ms - (a.registered_at or now_ms)) / 1000),
                     slo / 1000 if slo else None))
    return rows


def plot_status(views: dict[str, TenantView], path: str, now_ms: int | None = None) -> None:
    """Per tenant, left: what the drift rule judged over event time, one line per run, with
    the level that raises a quarantine (`drift_series`), quarantines (red) and promotions and
    rollbacks (green), and each snapshot's prequential score on a second axis; right: each
    stage's freshness (the age of the snapshot it points to) against the stage's SLO."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ts(ms):
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    now_ms = now_ms or int(datetime.now(timezone.utc).timestamp() * 1000)
    tenants = sorted(views) or ["(none)"]
    fig, axes = plt.subplots(len(tenants), 2, figsize=(14, 3.2 * len(tenants)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for (ax, fax), t in zip(axes, tenants):
        e = views.get(t)
        if e is None:
            ax.set_title(t)
            continue
        arts = e.artifacts()
        metric = _score_metric(arts) or "loss"
        series = drift_series(e)
        rules = sorted({r["rule"] or "not recorded" for r in series})
        ax.set_title(f"{t}: drift as the {' / '.join(rules) or '-'} rule judges it, over event "
                     "time (one line per run)", fontsize=10)
        for i, run in enumerate(series):
            shade = plt.cm.Reds(0.45 + 0.5 * (i + 1) / (len(series) + 1))
            x = [ts(v) for v in run["x"]]
            ax.plot(x, run["judged"], "-", lw=1.2, color=shade,
                    label=f"{run['label']}, run {i + 1}")
            if any(v is not None for v in run["raise_at"]):
                ax.plot(x, [float("nan") if v is None else v for v in run["raise_at"]], ":",
                        lw=1.2, color="tab:red", label=f"raises a quarantine above, run {i + 1}")
        ax.set_ylabel("drift score (|p - y| or scaled error)", fontsize=9)
        ax.set_xlabel("event time (UTC)", fontsize=8)
        pts = sorted((ts(a.created_at), a.metrics[metric]) for a in arts
                     if a.created_at and a.metrics.get(metric) is not None)
        if pts:
            ax2 = ax.twinx()
            ax2.plot(*zip(*pts), "s", ms=3, color="tab:blue", label=f"prequential {metric}")
            if metric == "loss":
                ax2.set_yscale("log")
            ax2.set_ylabel(f"prequential {metric} per snapshot", color="tab:blue", fontsize=9)
        by_id = {a.id: a for a in arts}
        marks = [(h, "tab:red", "quarantine") for h in quarantines(e)]
        marks += [(h, "tab:green", f"{h['action']} {h['to_stage']}") for h in e.history
                  if h["action"] in ("promote", "rollback")]
        for h, color, label in marks:
            at = _event_time_of(h, by_id.get(h.get("artifact_id")))
            if at is None:
                continue
            x = ts(at)
            ax.axvline(x, color=color, lw=1.2, ls="--", alpha=0.7)
            ax.annotate(label, (x, 0.95), xycoords=("data", "axes fraction"), color=color,
                        fontsize=7, rotation=90, va="top")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        rows = freshness_rows(e, now_ms)
        fax.set_title(f"{t}: stage freshness (red: SLO)", fontsize=10)
        if not rows:
            fax.text(0.5, 0.5, "no stage points to a snapshot yet\n(upm promote)",
                     ha="center", va="center", fontsize=9, transform=fax.transAxes)
            fax.set_xticks([])
            fax.set_yticks([])
            continue
        fax.barh([r[0] for r in rows], [r[1] for r in rows], color="tab:gray")
        for k, (_, _, slo_s) in enumerate(rows):
            if slo_s:
                fax.plot([slo_s] * 2, [k - 0.4, k + 0.4], color="tab:red", lw=2)
        fax.set_xscale("log")
        fax.set_xlabel("age of the snapshot served (s, log)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def cmd_export(args) -> int:
    from model.lifecycle.export import ExportError, export_saved_model

    store, registry = _open(args)
    try:
        m = export_saved_model(registry, store, Verifier.from_env(), args.tenant, args.directory,
                               stage=args.stage, snapshot_id=args.snapshot)
    except ExportError as e:
        raise UserError(str(e), exit_code=1) from None
    why = {"stage": f"what {args.tenant}/{args.stage} points to",
           "snapshot id": "as named",
           "newest verified": "the newest snapshot that is not quarantined and verifies"}
    print(f"exported {m['snapshot_id']} ({why[m['chosen_as']]}; v{m['version']}, sha256 "
          f"{m['snapshot_sha256'][:12]}…, signed by {m['signed_by']}) as a SavedModel in "
          f"{args.directory}; signature {m['signature_def']['name']}: feature_names, "
          "feature_values -> prediction, embedding")
    for note in m["skipped"]:
        print(f"  passed over {note}")
    return 0


def cmd_keys(args) -> int:
    priv, pub = generate_keypair(args.dir, args.name)
    print(f"private key {priv} (set UPM_SIGNING_KEY_FILE for the job)")
    print(f"public key  {pub} (set UPM_VERIFY_KEY_FILES for promotion and adapters)")
    return 0


def cmd_policy(args) -> int:
    print(DEFAULT_POLICY_TOML if not args.policy else open(args.policy).read(), end="")
    try:
        Policy.load(args.policy)
    except PolicyError as e:
        print(f"upm policy: {e}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    def store(p):
        p.add_argument("--store", default="./upm-data", help="store root (default ./upm-data)")
        return p

    r = store(sub.add_parser("registry", help="inspect the registry"))
    r.add_argument("action", choices=("list", "show", "history", "verify"))
    r.add_argument("--tenant")
    r.add_argument("--require-signed", action="store_true",
                   help="verify: an artifact without a valid, checked signature is bad")
    r.set_defaults(func=cmd_registry)

    p = store(sub.add_parser("promote", help="promote an artifact to a stage (policy-gated)"))
    p.add_argument("--tenant", required=True)
    p.add_argument("--to", required=True, choices=STAGES)
    p.add_argument("--snapshot", help="artifact id (default: what the previous stage holds)")
    p.add_argument("--actor", required=True)
    p.add_argument("--role")
    p.add_argument("--ack", action="store_true", help="explicit acknowledgement (for active)")
    p.add_argument("--reason", required=True)
    p.add_argument("--policy", help="policy TOML (default: `upm policy` shows it)")
    p.add_argument("--config", help="UPM config TOML (its features.unified_model joins the canary allowlist)")
    p.set_defaults(func=cmd_promote)

    b = store(sub.add_parser("rollback", help="roll a stage back to its last known-good"))
    b.add_argument("--tenant", required=True)
    b.add_argument("--stage", required=True, choices=STAGES)
    b.add_argument("--actor", required=True)
    b.add_argument("--reason", required=True)
    b.add_argument("--from-snapshot", help="only if the stage still points to this artifact")
    b.set_defaults(func=cmd_rollback)

    t = store(sub.add_parser("retention", help="list (or --apply) snapshot deletions"))
    t.add_argument("--keep-best", type=int, default=5)
    t.add_argument("--metric", default="loss")
    t.add_argument("--milestone-every", type=int, default=10)
    t.add_argument("--retention-days", type=int, default=30)
    t.add_argument("--apply", action="store_true")
    t.add_argument("--actor", default="upm-retention")
    t.set_defaults(func=cmd_retention)

    s = store(sub.add_parser("status", help="stages, freshness, drift, quarantines, adoption"))
    s.add_argument("--plot", metavar="FILE.png")
    s.set_defaults(func=cmd_status)

    e = store(sub.add_parser(
        "export", help="a verified snapshot as a TensorFlow SavedModel that takes raw features",
        description="Checks the snapshot as promotion does (sha256, a trusted signature: "
        "UPM_VERIFY_KEYS / UPM_VERIFY_KEY_FILES) and writes a SavedModel whose serving_default "
        "takes feature_names [batch, k] (string, '' pads) and feature_values [batch, k] "
        "(float64), with assets.extra/upm-export.json listing its source and its files' sha256."))
    e.add_argument("--tenant", required=True)
    which = e.add_mutually_exclusive_group()
    which.add_argument("--stage", choices=STAGES, help="the snapshot this stage points to")
    which.add_argument("--snapshot", help="a snapshot id, or `latest` (the default): the newest "
                       "snapshot that is not quarantined and passes verification")
    e.add_argument("--format", choices=("saved_model",), default="saved_model")
    e.add_argument("directory", help="a new (or empty) directory to write")
    e.set_defaults(func=cmd_export)

    k = sub.add_parser("keys", help="generate an Ed25519 signing key pair")
    k.add_argument("--dir", default="./upm-keys")
    k.add_argument("--name", default="upm")
    k.set_defaults(func=cmd_keys)

    pol = sub.add_parser("policy", help="print (and check) the promotion policy")
    pol.add_argument("--policy")
    pol.set_defaults(func=cmd_policy)
