"""Learning quality: prequential (test-then-train) scores of the UPM core against River and
Vowpal Wabbit on the same rows in the same order, on data that ships inside a package
(scikit-learn's bundled sets, River's bundled sets and synthetic generators; nothing is
downloaded).

    .venv-flink/bin/python bench/quality.py [--rows 5000]

Each data set is one tenant: row i becomes a FeatureWindow 1 s after row i-1, with its label,
and goes through the engine-free core (pipelines/local_job.py: ReplayBuffer -> TrainerState ->
DriftWindow) with
  - "defaults": `UpmConfig()` as shipped: `model.head = auto` chooses the head from the labels
    (logistic for 0/1 labels, linear for numbers): what a user gets without choosing anything;
  - "mlp":      the hidden-layer head for the task (mlp_logistic / mlp), other knobs default;
  - "mlp, tuned": the same with 128 hidden units and Adam at 0.01 (the best of a small sweep);
  - "user":     the config of issue 12's report (learning rate 0.01, batch 8).
River's anchors beside them: `StandardScaler | LogisticRegression` / `LinearRegression`, and for
classification its strongest online models, Adaptive Random Forest (ARFClassifier) and the
Hoeffding Adaptive Tree. Categorical features (RandomTree, STAGGER) are one-hot encoded
(`name=value: 1.0`) for every learner. Each learner's rows/s is measured on the same rows.
Every window's shadow prediction (made by weights that have not seen it) is scored against its
label.

Drift (issue 12): streams with one known abrupt change (SEA's threshold switched, a hyperplane's
labels flipped, Friedman's global abrupt drift), long enough for two drift windows before it
(the default drift window is 1 h of event time = 3,600 windows here). The default rule
(relative) and the seeds' (absolute p95 > 0.2) are run on the same stream; River's ADWIN
(delta 0.002) reads the same drift scores, window by window. Reported: false alarms (before the
change) and the delay of the first detection after it, in windows. Binary: accuracy (threshold 0.5) and log loss; regression: MAE. River:
`StandardScaler | LogisticRegression(SGD(0.05))` / `StandardScaler | LinearRegression()`;
VW: `--loss_function logistic --link logistic` / squared loss. The quarantine column counts the
drift quarantines the defaults raise on the stream (the sets without a concept change should
raise none).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from provenance import provenance_line, write_results  # noqa: E402  (bench/, the script's directory)

from pipelines.local_job import run_local  # noqa: E402
from state.config import UpmConfig  # noqa: E402

T0 = 1_800_000_000_000


# -- data sets: (name, task, rows of (features, target)) ------------------------------------------

def _shuffled(X, y, seed=0):
    order = np.random.default_rng(seed).permutation(len(y))
    return [({f"f{j}": float(v) for j, v in enumerate(X[i])}, float(y[i])) for i in order]


def datasets(n_synth: int):
    from river import datasets as rd
    from river.datasets import synth
    from sklearn import datasets as sk

    out = []
    bc = sk.load_breast_cancer()
    out.append(("breast_cancer (sklearn)", "binary", _shuffled(bc.data, bc.target)))
    wine = sk.load_wine()
    out.append(("wine class 0 vs rest (sklearn)", "binary",
                _shuffled(wine.data, (wine.target == 0).astype(float))))
    digits = sk.load_digits()
    out.append(("digits < 5 (sklearn)", "binary",
                _shuffled(digits.data, (digits.target < 5).astype(float))))
    out.append(("phishing (river)", "binary",
                [(dict(x), float(y)) for x, y in rd.Phishing()]))
    out.append(("bananas (river)", "binary", [(dict(x), float(y)) for x, y in rd.Bananas()]))
    out.append(("SEA variant 0 (river synth)", "binary",
                [(dict(x), float(y)) for x, y in synth.SEA(variant=0, seed=1).take(n_synth)]))
    out.append(("hyperplane 10-d (river synth)", "binary",
                [(dict(x), float(y)) for x, y in
                 synth.Hyperplane(seed=1, n_features=10, noise_percentage=0.05).take(n_synth)]))
    diabetes = sk.load_diabetes()
    out.append(("diabetes (sklearn)", "regression", _shuffled(diabetes.data, diabetes.target)))
    # River's synthetic generators whose boundary is not a plane (issue 24)
    out.append(("Agrawal function 2 (river synth)", "binary",
                _rows(synth.Agrawal(classification_function=2, seed=1).take(n_synth))))
    out.append(("RandomRBF 10-d, 50 centroids (river synth)", "binary", _rows(synth.RandomRBF(
        seed_model=1, seed_sample=1, n_classes=2, n_features=10, n_centroids=50).take(n_synth))))
    out.append(("Sine (river synth)", "binary", _rows(synth.Sine(seed=1).take(n_synth))))
    out.append(("RandomTree depth 6 (river synth)", "binary", _rows(synth.RandomTree(
        seed_tree=1, seed_sample=1, n_classes=2, n_num_features=5, n_cat_features=5,
        n_categories_per_feature=5, max_tree_depth=6).take(n_synth), categorical="x_cat_")))
    out.append(("Mixed (river synth)", "binary", _rows(synth.Mixed(seed=1).take(n_synth))))
    out.append(("STAGGER one-hot (river synth)", "binary",
                _rows(synth.STAGGER(seed=1).take(n_synth), categorical="")))
    out.append(("trump approval (river)", "regression",
                [(dict(x), float(y)) for x, y in rd.TrumpApproval()]))
    out.append(("friedman (river synth)", "regression",
                [(dict(x), float(y)) for x, y in synth.Friedman(seed=1).take(n_synth)]))
    return out


def _rows(pairs, categorical: str | None = None):
    """(features, label) rows; features whose name starts with `categorical` one-hot encoded."""
    out = []
    for x, y in pairs:
        feats = {}
        for k, v in x.items():
            if categorical is not None and str(k).startswith(categorical):
                feats[f"{k}={v}"] = 1.0
            else:
                feats[str(k)] = float(v)
        out.append((feats, float(y)))
    return out


def drift_streams(before: int, after: int):
    """(name, task, rows, change index, config): one abrupt change at row `before`, and three
    streams as long without one."""
    from river.datasets import synth

    sea = [(dict(x), float(y)) for x, y in synth.SEA(variant=0, seed=3).take(before)]
    sea += [(dict(x), float(y)) for x, y in synth.SEA(variant=3, seed=4).take(after)]
    plane = [(dict(x), float(y)) for x, y in
             synth.Hyperplane(seed=5, n_features=10, noise_percentage=0.05).take(before + after)]
    plane = plane[:before] + [(x, 1.0 - y) for x, y in plane[before:]]
    fried = [(dict(x), float(y)) for x, y in synth.FriedmanDrift(
        drift_type="gra", position=(before, 10 * (before + after)), seed=6).take(before + after)]
    n = before + after  # the same length with no change: every detection is a false alarm
    steady = [
        ("no change: SEA variant 1", "binary",
         [(dict(x), float(y)) for x, y in synth.SEA(variant=1, seed=11, noise=0.05).take(n)], n, {}),
        ("no change: hyperplane 10-d", "binary",
         [(dict(x), float(y)) for x, y in
          synth.Hyperplane(seed=12, n_features=10, noise_percentage=0.1).take(n)], n, {}),
        ("no change: friedman, drift_scale 5", "regression",
         [(dict(x), float(y)) for x, y in synth.Friedman(seed=2).take(n)], n,
         {"trainer": {"drift_scale": 5.0}})]
    return steady + [("SEA threshold 8 -> 9.5", "binary", sea, before, {}),
            ("hyperplane labels flipped", "binary", plane, before, {}),
            # numeric scores are min(1, |error| / trainer.drift_scale): at the default scale 1
            # Friedman's errors (about 2) all score 1 and no change can show; 5 is its target's
            # standard deviation, in its units, as a user would set it
            ("friedman global abrupt (gra), drift_scale 5", "regression", fried, before,
             {"trainer": {"drift_scale": 5.0}})]


def detections(times_ms, change: int) -> dict:
    """False alarms before the change and the first detection's delay after it, in windows."""
    rows = [(t - T0) // 1000 for t in times_ms]
    after = [r - change for r in rows if r >= change]
    return {"false_alarms": sum(r < change for r in rows),
            "delay": min(after) if after else None}


def adwin_detections(scores, change: int) -> dict:
    from river import drift

    adwin, found = drift.ADWIN(delta=0.002), []
    for i, score in enumerate(scores):
        adwin.update(score)
        if adwin.drift_detected:
            found.append(T0 + i * 1000)
    return detections(found, change)


def drift_row(name, task, rows, change, profile) -> dict:
    row = {"dataset": name, "rows": len(rows), "change_at": change}
    mlp = {"head": "mlp_logistic" if task == "binary" else "mlp"}
    for rule, extra in (("relative", {}), ("absolute", {}), ("relative_mlp", {"model": mlp})):
        cfg = UpmConfig.from_dict({**profile, **extra, "drift": {"rule": rule.split("_")[0]}})
        run = upm_run(f"d-{rule}", rows, cfg)
        times = [q.quarantined_at for t in run.tenants.values() for q in t.quarantines]
        row[rule] = detections(times, change)
        if rule == "relative":
            by_id = {d.prediction_id: d.drift_score for d in run.deltas}
            scores = [by_id[f"r{i}"] for i in range(len(rows))]
    row["adwin"] = adwin_detections(scores, change)
    return row


def _clean(x: dict) -> dict:
    return {str(k).replace(" ", "_"): float(v) for k, v in x.items()}


# -- learners ----------------------------------------------------------------------------------

def upm_run(tenant: str, rows, cfg: UpmConfig):
    lines = []
    for i, (x, y) in enumerate(rows):
        s = T0 + i * 1000
        lines.append(json.dumps({"window_id": f"r{i}", "tenant_id": tenant, "window_start": s,
                                 "window_end": s + 1000, "features": _clean(x), "label": y}))
    return run_local(lines, cfg, keep_deltas=True)


def upm_predictions(tenant: str, rows, cfg: UpmConfig):
    run = upm_run(tenant, rows, cfg)
    by_id = {d.prediction_id: d.shadow_prediction for d in run.deltas}
    preds = np.array([by_id[f"r{i}"] for i in range(len(rows))])
    quarantines = sum(len(t.quarantines) for t in run.tenants.values())
    return preds, quarantines


def river_predictions(task: str, rows, learner: str = "linear"):
    from river import forest, linear_model, optim, preprocessing, tree

    if task == "binary":
        model = {"linear": lambda: preprocessing.StandardScaler()
                 | linear_model.LogisticRegression(optim.SGD(0.05)),
                 "arf": lambda: forest.ARFClassifier(seed=1),
                 "hat": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=1)}[learner]()
        predict = lambda x: model.predict_proba_one(x).get(True, 0.0)  # noqa: E731
        learn = lambda x, y: model.learn_one(x, y > 0.5)  # noqa: E731
    else:
        model = preprocessing.StandardScaler() | linear_model.LinearRegression()
        predict, learn = model.predict_one, model.learn_one
    out = []
    for x, y in rows:
        out.append(predict(x))
        learn(x, y)
    return np.array(out, dtype=float)


def vw_predictions(task: str, rows):
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return None
    args = "--loss_function logistic --link logistic --quiet" if task == "binary" else "--quiet"
    vw = Workspace(args)
    out = []
    for x, y in rows:
        feats = " ".join(f"{k}:{v}" for k, v in _clean(x).items())
        label = (1 if y > 0.5 else -1) if task == "binary" else y
        out.append(vw.predict(f"| {feats}"))
        vw.learn(f"{label} | {feats}")
    vw.finish()
    return np.array(out, dtype=float)


# -- scores ------------------------------------------------------------------------------------

def scores(task: str, preds, ys) -> dict:
    if preds is None:
        return {}
    if task == "binary":
        p = np.clip(preds, 1e-7, 1 - 1e-7)
        return {"accuracy": float(np.mean((preds >= 0.5) == (ys > 0.5))),
                "log_loss": float(-np.mean(ys * np.log(p) + (1 - ys) * np.log(1 - p)))}
    return {"mae": float(np.mean(np.abs(preds - ys)))}


def configs(task: str) -> dict[str, dict]:
    mlp = {"head": "mlp_logistic" if task == "binary" else "mlp"}
    return {"defaults": {}, "mlp": {"model": mlp},
            "mlp_tuned": {"model": {**mlp, "hidden_units": 128, "optimizer": "adam"},
                          "trainer": {"learning_rate": 0.01}},
            "user": {"trainer": {"learning_rate": 0.01, "batch_size": 8}}}


def timed(fn, rows):
    """fn(rows) and the rows per second it ran at."""
    t = time.perf_counter()
    out = fn(rows)
    return out, len(rows) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000, help="rows of each synthetic stream")
    ap.add_argument("--drift-before", type=int, default=10_000,
                    help="rows before the change of each drift stream")
    ap.add_argument("--drift-after", type=int, default=6_000)
    args = ap.parse_args()
    results = []
    upm_run("warm-up", [({"a": 1.0}, 1.0)] * 64, UpmConfig())  # TensorFlow's tracing
    for name, task, rows in datasets(args.rows):
        ys = np.array([y for _, y in rows])
        row = {"dataset": name, "task": task, "rows": len(rows), "rows_per_s": {}}
        for label, profile in configs(task).items():
            cfg = UpmConfig.from_dict(profile)
            (preds, q), rate = timed(lambda r: upm_predictions(f"t{len(results)}", r, cfg), rows)
            row[f"upm_{label}"] = scores(task, preds, ys)
            row[f"quarantines_{label}"] = q
            row["rows_per_s"][f"upm_{label}"] = rate
        learners = {"river": lambda r: river_predictions(task, r), "vw": lambda r: vw_predictions(
            task, r)}
        if task == "binary":
            learners["arf"] = lambda r: river_predictions(task, r, "arf")
            learners["hat"] = lambda r: river_predictions(task, r, "hat")
        for label, fn in learners.items():
            preds, rate = timed(fn, rows)
            row[label] = scores(task, preds, ys)
            row["rows_per_s"][label] = rate if preds is not None else None
        results.append(row)
        print(_line(row), flush=True)
    drifts = []
    for name, task, rows, change, profile in drift_streams(args.drift_before, args.drift_after):
        drifts.append(drift_row(name, task, rows, change, profile))
        print(_drift_line(drifts[-1]), flush=True)
    stamp = write_results("quality", {"learning": results, "drift": drifts})
    source = json.loads(stamp.read_text())["provenance"]
    (HERE / "results" / "quality.md").write_text(
        markdown(results) + "\n" + drift_markdown(drifts) + "\n" + provenance_line(source))


LEARNERS = ("upm_defaults", "upm_mlp", "upm_mlp_tuned", "upm_user", "river", "arf", "hat", "vw")
NAMES = ("UPM defaults", "UPM mlp", "UPM mlp, tuned", "UPM user config", "River linear",
         "River ARF", "River HAT", "VW")


def best_anchor(row) -> tuple[str, float]:
    """The better of River's linear model and ARF (lower MAE for a regression: linear only)."""
    metric = "accuracy" if row["task"] == "binary" else "mae"
    got = {k: row[k][metric] for k in ("river", "arf") if row.get(k)}
    pick = max if metric == "accuracy" else min
    name = pick(got, key=got.get)
    return name, got[name]


def markdown(results) -> str:
    lines = ["| data set | rows | metric | " + " | ".join(NAMES)
             + " | gap, defaults vs the better of River linear and ARF | quarantines "
               "(defaults) |", "|---|---:|---|" + "---:|" * (len(NAMES) + 2)]
    for row in results:
        metric = "accuracy" if row["task"] == "binary" else "mae"
        vals = [row[k].get(metric) if row.get(k) else None for k in LEARNERS]
        d = vals[0]
        name, best = best_anchor(row)
        gap = (f"{(d - best) * 100:+.1f} points" if metric == "accuracy"
               else f"{(d / best - 1) * 100:+.0f}%") + f" ({NAMES[LEARNERS.index(name)]})"
        cells = [row["dataset"], str(row["rows"]), metric,
                 *("-" if v is None else f"{v:.3f}" for v in vals), gap,
                 str(row["quarantines_defaults"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Rows per second of each learner, median over the data sets (one thread, "
              "test-then-train, one tenant per set):", "",
              "| " + " | ".join(NAMES) + " |", "|" + "---:|" * len(NAMES)]
    rates = []
    for k in LEARNERS:
        got = [r["rows_per_s"][k] for r in results if r["rows_per_s"].get(k)]
        rates.append(f"{np.median(got):,.0f}" if got else "-")
    lines.append("| " + " | ".join(rates) + " |")
    return "\n".join(lines) + "\n"


def drift_markdown(drifts) -> str:
    lines = ["| stream (change at row) | UPM relative (default): false alarms, delay | "
             "UPM absolute p95 > 0.2: false alarms, delay | ADWIN on the same scores: "
             "false alarms, delay | UPM relative, hidden-layer head: false alarms, delay |",
             "|---|---|---|---|---|"]
    for row in drifts:
        at = "none" if row["change_at"] >= row["rows"] else row["change_at"]
        cells = [f"{row['dataset']} ({at})"]
        cells += [_detected(row[k]) for k in ("relative", "absolute", "adwin", "relative_mlp")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n(delay in windows after the change; - = not detected)\n"


def _detected(d) -> str:
    return f"{d['false_alarms']}, {'-' if d['delay'] is None else d['delay']}"


def _drift_line(row) -> str:
    return (f"{row['dataset']:<34} change at {row['change_at']}: "
            + "  ".join(f"{k} {_detected(row[k])}"
                        for k in ("relative", "absolute", "adwin", "relative_mlp")))


def _line(row) -> str:
    metric = "accuracy" if row["task"] == "binary" else "mae"
    get = lambda k: row[k].get(metric, math.nan) if row.get(k) else math.nan  # noqa: E731
    name, best = best_anchor(row)
    d = get("upm_defaults")
    gap = (d - best) * 100 if metric == "accuracy" else (d / best - 1) * 100
    unit = "points" if metric == "accuracy" else "% MAE"
    vals = "  ".join(f"{n} {get(k):.3f}" for k, n in zip(LEARNERS, NAMES))
    return (f"{row['dataset']:<34}{row['rows']:>6}  {metric:<8} {vals}  gap vs {name} "
            f"{gap:+6.1f} {unit}  quarantines {row['quarantines_defaults']}")


if __name__ == "__main__":
    main()
