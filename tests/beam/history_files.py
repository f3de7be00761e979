"""Write the same windows as JSON lines, Parquet and TFRecord (tf.Example) history files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from state.parse import parse_message
from state.records import FeatureWindow, arrow_schema, to_arrow_row


def windows_of(lines: list[str]) -> list[FeatureWindow]:
    """The well-formed FeatureWindows among stream messages, in arrival order."""
    return [p.record for p in map(parse_message, lines)
            if p.ok and isinstance(p.record, FeatureWindow)]


def write_jsonl(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def write_parquet(path: Path, windows: list[FeatureWindow], files: int = 2,
                  extra_rows: list[dict] = ()) -> None:
    """`files` Parquet files of arrow_schema(FeatureWindow), plus raw extra rows in the last."""
    path.mkdir(parents=True, exist_ok=True)
    schema = arrow_schema(FeatureWindow)
    rows = [to_arrow_row(w) for w in windows]
    step = -(-len(rows) // files)
    for i in range(files):
        part = rows[i * step:(i + 1) * step] + (list(extra_rows) if i == files - 1 else [])
        pq.write_table(pa.Table.from_pylist(part, schema=schema), path / f"part-{i}.parquet",
                       row_group_size=700)


def tf_example(w: FeatureWindow | dict) -> bytes:
    d = w.to_dict() if isinstance(w, FeatureWindow) else w
    f = {}
    for k in ("window_id", "tenant_id"):
        if d.get(k) is not None:
            f[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[d[k].encode()]))
    for k in ("window_start", "window_end"):
        v = getattr(w, k) if isinstance(w, FeatureWindow) else d.get(k)
        if v is not None:
            f[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
    if d.get("label") is not None:
        f["label"] = tf.train.Feature(float_list=tf.train.FloatList(value=[d["label"]]))
    feats = d.get("features") or {}
    f["feature_names"] = tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[k.encode() for k in feats]))
    f["feature_values"] = tf.train.Feature(float_list=tf.train.FloatList(
        value=list(feats.values())))
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def write_tfrecord(path: Path, windows: list[FeatureWindow], extra: list[dict] = ()) -> None:
    """One gzip TFRecord file of tf.Examples in the window-table layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as out:
        for w in list(windows) + list(extra):
            out.write(tf_example(w))


def jsonl_of(windows: list[FeatureWindow]) -> list[str]:
    return [json.dumps(w.to_dict()) for w in windows]
