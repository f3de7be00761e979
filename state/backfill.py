"""Backfill of one tenant: its window table (all of its history in the range) in, trained
snapshots out, with the decisions the streaming path makes for the same windows. No I/O, no clock.

`prepare` puts the tenant's windows in the order the ReplayBuffer releases them (window_end,
window_start, window_id), drops the second and later copies of a window_id, gives unlabeled
windows the label of their first Feedback (by observed_at), and finds gaps. With the whole
history at hand nothing is late: a window the stream would have judged late is trained here in
its place. Then `train` hashes the rows chunk by chunk (columnar) and trains them through
`TrainerState.train_block`, so micro-batches, steps and snapshot cuts are those of the stream.

Accounting, per tenant: windows = out_of_range + duplicates + unlabeled + label_refused +
trained + refused (label_refused: rows whose label the head `auto` chose cannot learn, see
`choose_head`; refused: the rows of a tenant the caller would not train, see `refuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.hashing import FeatureHasher
from model.snapshot import Snapshot
from state.drift import drift_scores
from state.records import DriftScore, Duplicate, Gap
from state.replay import RELEASE_ORDER, is_gap
from state.trainer import TrainerState

COUNTERS = ("windows", "feedback", "out_of_range", "duplicates", "unlabeled", "label_refused",
            "trained", "refused", "gaps", "snapshots")
ORDER = [(name, "ascending") for name in RELEASE_ORDER]


@dataclass
class Prepared:
    tenant_id: str
    rows: pa.Table                      # labeled windows to train, in release order
    counters: dict[str, int]
    duplicates: list[Duplicate] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)


def prepare(tenant_id: str, table: pa.Table, start_ms: int | None, end_ms: int | None,
            gap_tolerance_ms: int = 0) -> Prepared:
    """`table`: the tenant's valid window-table rows (windows and Feedback), any order.
    Windows count when start_ms <= window_end < end_ms (either bound may be None)."""
    counters = dict.fromkeys(COUNTERS, 0)
    is_fb = table.column("is_feedback")
    windows, feedback = table.filter(pc.invert(is_fb)), table.filter(is_fb)
    counters["windows"], counters["feedback"] = windows.num_rows, feedback.num_rows
    in_range = pa.array(np.ones(windows.num_rows, bool))
    if start_ms is not None:
        in_range = pc.and_(in_range, pc.greater_equal(windows.column("window_end"), start_ms))
    if end_ms is not None:
        in_range = pc.and_(in_range, pc.less(windows.column("window_end"), end_ms))
    windows = windows.filter(in_range).sort_by(ORDER)
    counters["out_of_range"] = counters["windows"] - windows.num_rows

    ids = windows.column("window_id").combine_chunks().dictionary_encode()
    _, first = np.unique(np.asarray(ids.indices), return_index=True)
    first.sort()
    dup_mask = np.ones(windows.num_rows, bool)
    dup_mask[first] = False
    duplicates = [Duplicate(tenant_id, r["window_id"], r["window_end"])
                  for r in windows.filter(pa.array(dup_mask)).select(["window_id", "window_end"])
                  .to_pylist()]
    windows = windows.take(pa.array(first, pa.int64()))
    counters["duplicates"] = len(duplicates)

    windows, gaps = _with_gaps(tenant_id, windows, gap_tolerance_ms)
    counters["gaps"] = len(gaps)
    windows = _join_feedback(windows, feedback)
    labeled = pc.is_valid(windows.column("label"))
    rows = windows.filter(labeled)
    counters["unlabeled"] = windows.num_rows - rows.num_rows
    return Prepared(tenant_id, rows, counters, duplicates, gaps)


def _with_gaps(tenant_id: str, windows: pa.Table, tolerance_ms: int) -> tuple[pa.Table, list[Gap]]:
    if windows.num_rows < 2:
        return windows, []
    start = np.asarray(windows.column("window_start"))
    end = np.asarray(windows.column("window_end"))
    covered = np.maximum.accumulate(end)[:-1]
    ids = windows.column("window_id").to_pylist()
    gaps = [Gap(tenant_id, int(covered[i]), int(start[i + 1]), int(start[i + 1] - covered[i]),
                ids[i], ids[i + 1])
            for i in np.flatnonzero(is_gap(covered, start[1:], tolerance_ms))]
    return windows, gaps


def _join_feedback(windows: pa.Table, feedback: pa.Table) -> pa.Table:
    """The trainer's label rule (TrainerState.on_window/on_feedback) as a sorted join: a window
    keeps its own label, else takes its first Feedback's by event time. A test holds the two
    forms to each other."""
    if feedback.num_rows == 0:
        return windows
    fb = feedback.sort_by([("window_end", "ascending")])  # observed_at; first Feedback wins
    labels: dict[str, float] = {}
    for wid, label in zip(fb.column("window_id").to_pylist(), fb.column("label").to_pylist()):
        labels.setdefault(wid, label)
    own = windows.column("label").to_pylist()
    joined = [v if v is not None else labels.get(w)
              for w, v in zip(windows.column("window_id").to_pylist(), own)]
    return windows.set_column(windows.schema.get_field_index("label"), "label",
                              pa.array(joined, pa.float64()))


def refuse(prepared: Prepared) -> None:
    """Count the prepared rows as refused (not trained, nothing written)."""
    prepared.counters["refused"] += prepared.rows.num_rows
    prepared.rows = prepared.rows.slice(0, 0)


def choose_head(prepared: Prepared, trainer: TrainerState) -> pa.Table:
    """As the stream does (TrainerState `_batch_ready` and `_enqueue`): a head still `auto` is
    chosen from the labels of the first micro-batch, then the rows whose label the trainer's
    head cannot learn are taken out of the prepared rows. Returns those rows, each with its
    reason in a `reason` column, for the caller to dead-letter."""
    rows = prepared.rows
    labels = np.asarray(rows.column("label"), np.float64)
    first = min(trainer.config.batch_size,
                trainer.config.snapshot_interval - trainer.since_snapshot)
    if len(labels):
        trainer.resolve_head(labels[:first].tolist())
    model = trainer.model
    bad = model.binary_labels_only & (labels != 0.0) & (labels != 1.0)
    refused = rows.filter(pa.array(bad)).append_column(
        "reason", pa.array([model.refusal(v) for v in labels[bad].tolist()], pa.string()))
    prepared.rows = rows.filter(pa.array(~bad))
    prepared.counters["label_refused"] += refused.num_rows
    return refused


@dataclass
class Progress:
    tenant_id: str
    trained: int
    total: int
    version: int
    loss: float


def train(prepared: Prepared, trainer: TrainerState, chunk_rows: int = 65536,
          on_progress: Callable[[Progress], None] | None = None) -> Iterator[Snapshot | DriftScore]:
    """Train the prepared rows (after `choose_head`); yield each Snapshot as it is cut (and one
    for the rest at the end), and for every snapshot whose descendants made shadow predictions, a DriftScore of
    those predictions (exact p95, the evidence the promotion policy reads)."""
    rows, n = prepared.rows, prepared.rows.num_rows
    hasher = FeatureHasher(trainer.model.input_width)
    kind, scale = trainer.model.prediction_kind, trainer.config.drift_scale
    scores: dict[str | None, list] = {}
    chunk_rows = max(chunk_rows, trainer.config.batch_size)
    i = 0
    while i < n:
        chunk = rows.slice(i, min(chunk_rows, n - i))
        final = i + chunk.num_rows >= n
        x, y, start, end = _arrays(chunk, hasher)
        out = trainer.train_block(x, y, start, end, final=final)
        for a, b, sid in out.segments:
            s = drift_scores(out.predictions[a:b], y[a:b], kind, scale)
            scores.setdefault(sid, []).append((s, int(end[a:b].max())))
        prepared.counters["trained"] += out.consumed
        prepared.counters["snapshots"] += len(out.snapshots)
        yield from out.snapshots
        for snap in out.snapshots:
            done = scores.pop(snap.manifest["parent_snapshot_id"], None)
            if done and snap.manifest["parent_snapshot_id"]:
                yield _drift(prepared.tenant_id, snap.manifest["parent_snapshot_id"], done)
        i += out.consumed
        if on_progress:
            on_progress(Progress(prepared.tenant_id, i, n, trainer.version, trainer.last_loss))
    last = trainer.snapshot_now()
    if last is not None:
        prepared.counters["snapshots"] += 1
        yield last
    for sid, done in scores.items():
        if sid:
            yield _drift(prepared.tenant_id, sid, done)


def _drift(tenant_id: str, snapshot_id: str, parts: list) -> DriftScore:
    s = np.concatenate([p for p, _ in parts])
    return DriftScore(tenant_id=tenant_id, window_end=max(e for _, e in parts),
                      drift_p95=float(np.percentile(s, 95)), drift_mean=float(s.mean()),
                      drift_max=float(s.max()), sample_count=int(len(s)), snapshot_id=snapshot_id)


def _arrays(chunk: pa.Table, hasher: FeatureHasher):
    names = chunk.column("feature_names").combine_chunks()
    values = chunk.column("feature_values").combine_chunks()
    offsets = np.asarray(names.offsets).astype(np.int64)
    lengths = np.diff(offsets)
    row_of = np.repeat(np.arange(chunk.num_rows), lengths)
    flat = names.flatten().dictionary_encode()
    x = hasher.transform_coded(chunk.num_rows, row_of, np.asarray(flat.indices),
                               flat.dictionary.to_pylist(), np.asarray(values.flatten()))
    y = np.asarray(chunk.column("label"), np.float32)
    return (x, y, np.asarray(chunk.column("window_start")),
            np.asarray(chunk.column("window_end")))
