"""The window table: FeatureWindows and Feedback as columns (an Arrow RecordBatch), the form a
backfill reads history in, whatever the file format.

    tenant_id      string         null only in invalid rows
    window_id      string
    window_start   int64          epoch ms (a Feedback row: its observed_at)
    window_end     int64          epoch ms (a Feedback row: its observed_at)
    feature_names  list<string>   null in Feedback rows
    feature_values list<double>
    label          double         null: unlabeled (its Feedback may come in another row)
    is_feedback    bool
    error          string         null, or the dead-letter reason (the classes of state/parse.py)
    raw            string         the offending input as text, in invalid rows only

Three sources, one contract:
- JSON lines: the stream's own messages, parsed row by row by `state.parse` (the same code as
  the streaming jobs).
- Parquet: the columns of `arrow_schema(FeatureWindow)` (times as timestamp[ms] or int64 epoch
  ms, `features` as map<string, double>, `label` optional).
- tf.Example: `window_id`, `tenant_id` (bytes), `window_start`, `window_end` (int64 epoch ms),
  `label` (float, optional) and the features as a pair of lists in the manner of
  `tf.io.SparseFeature`: `feature_names` (bytes) and `feature_values` (float).
Parquet and tf.Example rows are checked column-wise with the rules `state.parse` applies to a
message, so a bad row becomes a dead letter with the same reason class, never an exception.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from state import reasons
from state.parse import parse_message
from state.reasons import (DEFAULT_MAX_FEATURES, DEFAULT_TENANT, MAX_ID_LENGTH, MAX_TIME_MS,
                           MIN_TIME_MS)
from state.records import Feedback

SCHEMA = pa.schema([
    pa.field("tenant_id", pa.string()),
    pa.field("window_id", pa.string()),
    pa.field("window_start", pa.int64()),
    pa.field("window_end", pa.int64()),
    pa.field("feature_names", pa.list_(pa.string())),
    pa.field("feature_values", pa.list_(pa.float64())),
    pa.field("label", pa.float64()),
    pa.field("is_feedback", pa.bool_(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("raw", pa.string()),
])

PARQUET_COLUMNS = ("window_id", "tenant_id", "window_start", "window_end", "features")
TF_EXAMPLE_FEATURES = {"window_id": "bytes", "tenant_id": "bytes", "window_start": "int",
                       "window_end": "int", "label": "float", "feature_names": "bytes",
                       "feature_values": "float"}


class SchemaError(ValueError):
    """The input's columns cannot be read as windows at all (not a per-row problem)."""


def from_json_lines(lines: list[bytes | str], max_features: int = DEFAULT_MAX_FEATURES
                    ) -> pa.RecordBatch:
    rows = {name: [] for name in SCHEMA.names}
    for raw in lines:
        p = parse_message(raw, max_features)
        r = p.record
        if r is None:
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            _append(rows, None, None, None, None, None, None, None, False, p.reason, text[:65536])
        elif isinstance(r, Feedback):
            _append(rows, r.tenant_id, r.window_id, r.observed_at, r.observed_at, None, None,
                    r.label, True, None, None)
        else:
            _append(rows, r.tenant_id, r.window_id, r.window_start, r.window_end,
                    list(r.features), list(r.features.values()), r.label, False, None, None)
    return pa.RecordBatch.from_pydict(rows, schema=SCHEMA)


def _append(rows, *values) -> None:
    for name, v in zip(SCHEMA.names, values):
        rows[name].append(v)


def check_parquet_schema(schema: pa.Schema) -> None:
    missing = [c for c in PARQUET_COLUMNS if c not in schema.names]
    if missing:
        raise SchemaError(f"Parquet input has no column(s) {', '.join(missing)}; expected the "
                          f"columns of arrow_schema(FeatureWindow): {', '.join(PARQUET_COLUMNS)}, "
                          f"label (optional)")
    for c in ("window_start", "window_end"):
        t = schema.field(c).type
        if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
            raise SchemaError(f"Parquet column {c} is {t}; expected timestamp or int64 epoch ms")
    t = schema.field("features").type
    if not (pa.types.is_map(t) or (pa.types.is_list(t) and pa.types.is_struct(t.value_type))):
        raise SchemaError(f"Parquet column features is {t}; expected map<string, double>")


def from_parquet(batch: pa.RecordBatch, max_features: int = DEFAULT_MAX_FEATURES
                 ) -> pa.RecordBatch:
    check_parquet_schema(batch.schema)
    n = batch.num_rows
    errors = np.full(n, None, dtype=object)
    feats = batch.column("features")
    offsets = np.asarray(feats.offsets).astype(np.int64)
    entries = feats.values.slice(offsets[0], offsets[-1] - offsets[0])  # a batch may be a slice
    names, values = entries.field(0), entries.field(1)
    offsets -= offsets[0]
    label = batch.column("label") if "label" in batch.schema.names else pa.nulls(n, pa.float64())
    cols = _Columns(
        tenant=_as_string(batch.column("tenant_id")),
        window_id=_as_string(batch.column("window_id")),
        start=_as_ms(batch.column("window_start")), end=_as_ms(batch.column("window_end")),
        offsets=offsets, features_valid=_valid(feats),
        names=_as_string(names), values=_as_float(values), label=_as_float(label))
    return cols.assemble(errors, max_features, lambda i: _row_text(batch, i))


def from_tf_examples(batch: pa.RecordBatch, max_features: int = DEFAULT_MAX_FEATURES
                     ) -> pa.RecordBatch:
    """A RecordBatch decoded by tfx-bsl from tf.Examples (every column a list) as a window table."""
    n = batch.num_rows
    errors = np.full(n, None, dtype=object)

    def column(name):
        if name in batch.schema.names:
            return batch.column(name)
        return pa.nulls(n, pa.list_(pa.null()))

    def scalar(name, required):
        col = column(name)
        lengths = np.asarray(pc.fill_null(pc.list_value_length(col), 0))
        for i in np.flatnonzero(lengths > 1):
            _first_error(errors, i, reasons.wrong_type(name, "must have exactly one value"))
        if required:
            for i in np.flatnonzero(lengths == 0):
                _first_error(errors, i, reasons.missing(name))
        flat = pc.list_flatten(col)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if len(flat) == 0:
            return pa.nulls(n, flat.type)
        return flat.take(pa.array(np.where(lengths > 0, starts, 0), mask=lengths == 0))

    window_id = scalar("window_id", True)
    tenant = scalar("tenant_id", False)
    start, end = scalar("window_start", True), scalar("window_end", True)
    label = scalar("label", False)
    fnames, fvalues = column("feature_names"), column("feature_values")
    n_names = np.asarray(pc.fill_null(pc.list_value_length(fnames), 0))
    n_values = np.asarray(pc.fill_null(pc.list_value_length(fvalues), 0))
    for i in np.flatnonzero(n_names != n_values):
        _first_error(errors, i, reasons.wrong_type("feature_names and feature_values",
                                                   "differ in length"))
    offsets = np.concatenate([[0], np.cumsum(np.where(n_names == n_values, n_names, 0))])
    keep = pa.array(n_names == n_values)
    names = pc.list_flatten(pc.if_else(keep, fnames, pa.nulls(n, fnames.type)))
    values = pc.list_flatten(pc.if_else(keep, fvalues, pa.nulls(n, fvalues.type)))
    cols = _Columns(
        tenant=_as_string(tenant), window_id=_as_string(window_id), start=_as_ms(start),
        end=_as_ms(end), offsets=offsets, features_valid=np.ones(n, bool),
        names=_as_string(names), values=_as_float(values), label=_as_float(label))
    return cols.assemble(errors, max_features, lambda i: _row_text(batch, i))


class _Columns:
    """One batch's columns as numpy arrays, checked and assembled into a window table."""

    def __init__(self, tenant, window_id, start, end, offsets, features_valid, names, values,
                 label):
        self.tenant, self.window_id, self.start, self.end = tenant, window_id, start, end
        self.offsets, self.features_valid = offsets.astype(np.int64), features_valid
        self.names, self.values, self.label = names, values, label

    def assemble(self, errors: np.ndarray, max_features: int, row_text) -> pa.RecordBatch:
        n = len(errors)
        tenant = np.array([DEFAULT_TENANT if t is None else t for t in self.tenant], dtype=object)
        for i, t in enumerate(tenant):
            if not reasons.is_safe_tenant(t):
                _first_error(errors, i, reasons.unsafe_tenant(t))
        for i, w in enumerate(self.window_id):
            if w is None:
                _first_error(errors, i, reasons.missing("window_id"))
            elif not w:
                _first_error(errors, i, reasons.empty_id("window_id"))
            elif len(w) > MAX_ID_LENGTH:
                _first_error(errors, i, reasons.long_id("window_id"))
        for name, (ms, valid) in (("window_start", self.start), ("window_end", self.end)):
            for i in np.flatnonzero(~valid):
                _first_error(errors, i, reasons.missing(name))
            for i in np.flatnonzero(valid & ((ms < MIN_TIME_MS) | (ms > MAX_TIME_MS))):
                _first_error(errors, i, reasons.epoch_ms(name, int(ms[i]), str(int(ms[i]))))
        both = self.start[1] & self.end[1]
        for i in np.flatnonzero(both & (self.end[0] < self.start[0])):
            _first_error(errors, i, reasons.end_before_start(int(self.end[0][i]),
                                                             int(self.start[0][i])))
        for i in np.flatnonzero(~self.features_valid):
            _first_error(errors, i, reasons.missing("features"))
        counts = np.diff(self.offsets)
        for i in np.flatnonzero(counts > max_features):
            _first_error(errors, i, reasons.too_many_features(int(counts[i]), max_features))
        values, values_valid = self.values
        bad_value = ~(values_valid & np.isfinite(np.where(values_valid, values, 0.0)))
        for i in np.unique(np.searchsorted(self.offsets, np.flatnonzero(bad_value), "right") - 1):
            _first_error(errors, i, reasons.not_finite("features (a null, NaN or infinite value)"))
        label, label_valid = self.label
        for i in np.flatnonzero(label_valid & ~np.isfinite(np.where(label_valid, label, 0.0))):
            _first_error(errors, i, reasons.not_finite("label"))
        ok = np.array([e is None for e in errors], bool)
        return pa.RecordBatch.from_pydict({
            "tenant_id": pa.array(np.where(ok, tenant, None), pa.string()),
            "window_id": pa.array(np.where(ok, np.array(self.window_id, object), None),
                                  pa.string()),
            "window_start": pa.array(self.start[0], pa.int64(), mask=~ok),
            "window_end": pa.array(self.end[0], pa.int64(), mask=~ok),
            "feature_names": pa.ListArray.from_arrays(
                pa.array(self.offsets, pa.int32()), pa.array(self.names, pa.string()),
                mask=pa.array(~ok)),
            "feature_values": pa.ListArray.from_arrays(
                pa.array(self.offsets, pa.int32()), pa.array(values, pa.float64()),
                mask=pa.array(~ok)),
            "label": pa.array(label, pa.float64(), mask=~(ok & label_valid)),
            "is_feedback": pa.array(np.zeros(n, bool)),
            "error": pa.array(errors, pa.string()),
            "raw": pa.array([None if e is None else row_text(i) for i, e in enumerate(errors)],
                            pa.string()),
        }, schema=SCHEMA)


def _first_error(errors: np.ndarray, i: int, reason: str) -> None:
    if errors[i] is None:
        errors[i] = reason


def _valid(arr) -> np.ndarray:
    return np.asarray(arr.is_valid(), dtype=bool) if len(arr) else np.zeros(0, bool)


def _as_string(arr) -> list[str | None]:
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        return [None if b is None else b.decode("utf-8", errors="replace") for b in arr.to_pylist()]
    if pa.types.is_null(arr.type):
        return [None] * len(arr)
    return pc.cast(arr, pa.string()).to_pylist()


def _as_ms(arr) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms and validity of a timestamp or integer column."""
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), np.int64), np.zeros(len(arr), bool)
    if pa.types.is_timestamp(arr.type):
        arr = pc.cast(arr, pa.timestamp("ms", tz=arr.type.tz)).cast(pa.int64())
    return np.asarray(pc.fill_null(pc.cast(arr, pa.int64()), 0)), _valid(arr)


def _as_float(arr) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan), np.zeros(len(arr), bool)
    return np.asarray(pc.fill_null(pc.cast(arr, pa.float64()), np.nan)), _valid(arr)


def _row_text(batch: pa.RecordBatch, i: int) -> str:
    row = batch.slice(i, 1).to_pylist()[0]
    return json.dumps(row, default=lambda v: v.decode("utf-8", "replace")
                      if isinstance(v, bytes) else str(v))[:65536]
