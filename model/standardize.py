"""Online standardization of hashed inputs: per input coordinate, the running count, sum and sum
of squares of the values seen, and the transform (x - mean) / std that uses them.

Numeric heads standardize their targets the same way (River's TargetStandardScaler): the model
learns (y - mean) / std and its predictions are scaled back, so a target in the hundreds is
not hundreds of fixed-size optimizer steps away from the initial bias of 0.

Features arrive with their natural scales (a latency in ms beside a ratio in [0, 1]); a linear
model trained by a fixed step size learns poorly from them, which is why River's default pipeline
puts a StandardScaler first. Here the statistics live in the hashed space (one per coordinate of
`input_width`, so memory is bounded whatever the feature names). Every row counts in every
coordinate: hashing cannot tell a feature sent as 0 from one not sent, and counting only the
non-zero values was measured to be worse (a feature taking 0, 0.5 and 1 came out as 0, -1 and
+1: no longer monotonic; phishing 0.76 accuracy against River's 0.89).

The statistics are plain float64 arrays owned by the caller (the trainer's state, every
snapshot's arrays), so an adapter predicts exactly as the trainer did. Test-then-train: a
micro-batch is transformed with the statistics of the batches before it, then counted. Batches
are counted one at a time in order, so any grouping of the same batches gives bit-identical
statistics.
"""

from __future__ import annotations

import numpy as np

NAMES = ("norm_n", "norm_sum", "norm_sumsq", "norm_y")


def init_stats(width: int) -> dict[str, np.ndarray]:
    """Per input coordinate: count, sum, sum of squares; `norm_y` [count, sum, sum of squares]
    of the targets (used by numeric heads, whose targets have natural scales too)."""
    return {**{k: np.zeros(width, np.float64) for k in NAMES[:3]},
            "norm_y": np.zeros(3, np.float64)}


def stats_of(arrays: dict[str, np.ndarray], width: int) -> dict[str, np.ndarray]:
    """The statistics kept in a snapshot's arrays (none yet, in one made before they existed)."""
    if all(k in arrays for k in NAMES):
        return {k: np.asarray(arrays[k], np.float64) for k in NAMES}
    return init_stats(width)


def predict(model, params: dict, stats: dict[str, np.ndarray] | None, x: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (in target units) and embeddings of hashed rows x by a model (ModelConfig)
    with `params` and input statistics `stats` (None: not standardized). The trainer and the
    adapter both predict through this."""
    from model.network import learner_for

    pred, emb = learner_for(model).predict(params, x if stats is None else transform(stats, x))
    if stats is not None and model.prediction_kind == "numeric":
        mean, std = target_scale(stats)
        pred = (np.asarray(pred, np.float64) * std + mean).astype(np.float32)
    return pred, emb


def transform(stats: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """x [rows, width] standardized by `stats`: (x - mean) / std per coordinate, and 0 where
    the spread is not known yet (no row counted, or one value only), as River's StandardScaler
    does. Passing a raw value through instead would let a feature in the thousands make one
    huge first gradient, which Adam's second moment remembers for thousands of steps
    (measured: accuracy 0.73 instead of 0.93)."""
    mean, inv = input_scale(stats)
    return ((x.astype(np.float64) - mean) * inv).astype(np.float32)


def input_scale(stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 1 / std) per coordinate, as `transform` applies them (1 / std is 0 where the
    spread is not known yet)."""
    n = stats["norm_n"]
    safe_n = np.where(n > 0, n, 1.0)
    mean = stats["norm_sum"] / safe_n
    var = np.maximum(stats["norm_sumsq"] / safe_n - mean * mean, 0.0)
    spread = var > 0
    return mean, np.where(spread, 1.0 / np.sqrt(np.where(spread, var, 1.0)), 0.0)


def target_scale(stats: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mean, std) of the targets counted so far; (0, 1) before any, std 1 while constant."""
    n, s, ss = (float(v) for v in stats["norm_y"])
    if n == 0:
        return 0.0, 1.0
    mean = s / n
    var = max(ss / n - mean * mean, 0.0)
    return mean, (var ** 0.5 if var > 0 else 1.0)


def update(stats: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
           ) -> dict[str, np.ndarray]:
    """The statistics after counting the rows of x and targets y (one micro-batch)."""
    x64, y64 = x.astype(np.float64), np.asarray(y, np.float64)
    return {"norm_n": stats["norm_n"] + len(x64),
            "norm_sum": stats["norm_sum"] + x64.sum(axis=0),
            "norm_sumsq": stats["norm_sumsq"] + (x64 * x64).sum(axis=0),
            "norm_y": stats["norm_y"] + np.array([len(y64), y64.sum(), (y64 * y64).sum()])}


def transform_batches(stats: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, sizes,
                      scale_target: bool):
    """Consecutive micro-batches of x, y (row counts `sizes`), each transformed by the
    statistics of those before it, then counted. Returns the transformed rows, the targets
    (standardized too with `scale_target`), the (mean, std) each row's prediction is to be
    scaled back with, and the new statistics.

    All batches at once, with the arithmetic of counting them one by one (`update`, then
    `transform`): a batch's sums add its rows as `update` does, and the running statistics add
    the batches in order (a cumulative sum), so every value is bit for bit the same. Only the
    coordinates that ever held a value are computed: hashed rows are sparse, and a coordinate
    with no value yet has sums of 0, so 1 / std of 0 and transformed values of 0."""
    sizes = np.asarray(sizes, np.int64)
    batch_of_row = np.repeat(np.arange(len(sizes)), sizes)
    cols = np.flatnonzero((x.view(np.uint32) != 0).any(axis=0)
                          | (stats["norm_sum"] != 0) | (stats["norm_sumsq"] != 0))
    xc = x[:, cols].astype(np.float64)
    # running statistics before each batch (row 0: `stats`), and after the last one
    counted = np.concatenate(([0.0], np.cumsum(sizes, dtype=np.float64)))  # exact integers
    n = stats["norm_n"][cols] + counted[:, None]
    one_wide = x.shape[1] == 1
    s = np.cumsum(np.concatenate(([stats["norm_sum"][cols]],
                                  _batch_sums(xc, sizes, one_wide))), axis=0)
    ss = np.cumsum(np.concatenate(([stats["norm_sumsq"][cols]],
                                   _batch_sums(xc * xc, sizes, one_wide))), axis=0)
    mean, inv = input_scale({"norm_n": n[:-1], "norm_sum": s[:-1], "norm_sumsq": ss[:-1]})
    xs = np.zeros(x.shape, np.float32)
    xs[:, cols] = ((xc - mean[batch_of_row]) * inv[batch_of_row]).astype(np.float32)
    y64 = np.asarray(y, np.float64)
    y_sums = np.array([sizes.astype(np.float64), _batch_sums(y64, sizes),
                       _batch_sums(y64 * y64, sizes)]).T
    y_stats = np.cumsum(np.concatenate(([stats["norm_y"]], y_sums)), axis=0)
    if scale_target:
        back = np.array([target_scale({"norm_y": t}) for t in y_stats[:-1]], np.float64)
        back = back[batch_of_row]
    else:
        back = np.tile(np.array([0.0, 1.0]), (len(y64), 1))
    ys = ((y64 - back[:, 0]) / back[:, 1]).astype(np.float32)
    new = {"norm_n": stats["norm_n"] + counted[-1], "norm_sum": stats["norm_sum"].copy(),
           "norm_sumsq": stats["norm_sumsq"].copy(), "norm_y": y_stats[-1]}
    new["norm_sum"][cols], new["norm_sumsq"][cols] = s[-1], ss[-1]
    return xs, ys, back, new


def _batch_sums(a: np.ndarray, sizes: np.ndarray, pairwise: bool = False) -> np.ndarray:
    """Per batch, the sum of its rows of `a` in the order `update` adds them: numpy sums the
    rows of a batch one after another, and the values of a 1-D batch (or of a 2-D one only
    one column wide: `pairwise`) pairwise, as the same reduction over a run of equal batches,
    reshaped, does."""
    out = np.empty((len(sizes),) + a.shape[1:], a.dtype)
    i = lo = 0
    while i < len(sizes):
        size = sizes[i]
        j = i + 1
        while j < len(sizes) and sizes[j] == size:
            j += 1
        hi = lo + (j - i) * size
        run = a[lo:hi].reshape((j - i, size) + a.shape[1:])
        if a.ndim == 1 or pairwise:
            out[i:j] = run.sum(axis=1)
        else:
            acc = run[:, 0].copy()
            for r in range(1, size):
                acc += run[:, r]
            out[i:j] = acc
        i, lo = j, hi
    return out


def unscale(predictions: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Predictions of standardized targets in the targets' own units."""
    return (np.asarray(predictions, np.float64) * back[:, 1] + back[:, 0]).astype(np.float32)
