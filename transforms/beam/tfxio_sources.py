"""History as Arrow record batches through tfx-bsl's TFXIO, one reader per file format, each
ending in the window table of `state/window_table.py`.

- Parquet: tfx-bsl's `ParquetTFXIO` (batched Parquet reads).
- TFRecord of tf.Example: tfx-bsl's `TFExampleRecord` with a TFMD schema naming the features
  of the window table's tf.Example layout (gzip or not, by file name).
- JSON lines: tfx-bsl has no JSON reader, so `JsonLinesTFXIO` is a `RecordBasedTFXIO` whose raw
  records are the lines (Beam's `ReadFromText`) and whose decoder is the stream's own parser.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from tfx_bsl.coders import batch_util
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import record_based_tfxio
from tfx_bsl.tfxio.parquet_tfxio import ParquetTFXIO

from state import window_table

FORMATS = ("jsonl", "parquet", "tfrecord")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
             ".tfrecord": "tfrecord", ".tfrecords": "tfrecord", ".tfr": "tfrecord"}


class JsonLinesTFXIO(record_based_tfxio.RecordBasedTFXIO):
    """TFXIO over JSON-lines files of FeatureWindow and Feedback messages."""

    def __init__(self, file_pattern: str | list[str], max_features: int):
        super().__init__(telemetry_descriptors=["upm", "backfill"], logical_format="json",
                         physical_format="text")
        self._patterns = file_pattern if isinstance(file_pattern, list) else [file_pattern]
        self._max_features = max_features

    def _RawRecordBeamSourceInternal(self) -> beam.PTransform:
        patterns = self._patterns

        @beam.ptransform_fn
        def read(pipeline):
            lines = [pipeline | f"ReadLines[{i}]" >> beam.io.ReadFromText(
                pattern, coder=beam.coders.BytesCoder()) for i, pattern in enumerate(patterns)]
            return (lines | "FlattenPatterns" >> beam.Flatten()
                    | "DropBlankLines" >> beam.Filter(lambda b: bool(b.strip())))

        return read()

    def _RawRecordToRecordBatchInternal(self, batch_size: int | None = None) -> beam.PTransform:
        max_features, descriptors = self._max_features, self._telemetry_descriptors

        @beam.ptransform_fn
        def decode(raw_records):
            return (raw_records
                    | "Batch" >> batch_util.BatchRecords(batch_size, descriptors)
                    | "Parse" >> beam.Map(window_table.from_json_lines, max_features))

        return decode()

    def _ArrowSchemaNoRawRecordColumn(self) -> pa.Schema:
        return window_table.SCHEMA

    def TensorRepresentations(self):
        return {}

    def RecordBatches(self, options):
        """The window tables of the files, read in this process (no Beam)."""
        lines: list[bytes] = []
        for pattern in self._patterns:
            for meta in matched_files(pattern):
                with FileSystems.open(meta.path) as f:  # .gz and friends by suffix
                    for line in iter(f.readline, b""):
                        if line.strip():
                            lines.append(line.rstrip(b"\r\n"))
                        if len(lines) == options.batch_size:
                            yield window_table.from_json_lines(lines, self._max_features)
                            lines = []
        if lines:
            yield window_table.from_json_lines(lines, self._max_features)

    # The window table has no fixed tensors (each window names its own features), so there is
    # no TensorFlow dataset or tensor projection of it; the backfill hashes the columns instead.
    def TensorFlowDataset(self, options):
        raise NotImplementedError("JsonLinesTFXIO gives record batches, not a tf.data.Dataset")

    def _ProjectImpl(self, tensor_names):
        raise NotImplementedError("JsonLinesTFXIO has no tensor representations to project")


def tf_example_schema():
    """The TFMD schema of the window table's tf.Example layout."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    kinds = {"bytes": schema_pb2.BYTES, "int": schema_pb2.INT, "float": schema_pb2.FLOAT}
    schema = schema_pb2.Schema()
    for name, kind in window_table.TF_EXAMPLE_FEATURES.items():
        f = schema.feature.add()
        f.name, f.type = name, kinds[kind]
    return schema


def detect_format(patterns: list[str]) -> str:
    """The format named by the files' suffixes (`.jsonl`, `.parquet`, `.tfrecord`, optionally
    followed by `.gz`); all files must agree."""
    found = set()
    for pattern in patterns:
        for meta in matched_files(pattern):
            name = meta.path.lower().removesuffix(".gz")
            fmt = next((f for s, f in _SUFFIXES.items() if name.endswith(s)), None)
            if fmt is None:
                raise ValueError(f"cannot tell the format of {meta.path} from its name; "
                                 f"pass --format {'|'.join(FORMATS)}")
            found.add(fmt)
    if len(found) != 1:
        raise ValueError(f"the inputs mix formats {sorted(found)}; back them up one format a run")
    return found.pop()


def matched_files(pattern: str) -> list:
    """The files a pattern matches (local paths, gs://, s3://), or a clear error if none."""
    metas = FileSystems.match([pattern])[0].metadata_list
    if not metas:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return metas


class ReadWindowTables(beam.PTransform):
    """Files -> PCollection of window-table RecordBatches (state/window_table.py)."""

    def __init__(self, patterns: list[str], fmt: str, max_features: int):
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.patterns, self.fmt, self.max_features = patterns, fmt, max_features

    def expand(self, pipeline):
        if self.fmt == "jsonl":
            return pipeline | "ReadJsonLines" >> JsonLinesTFXIO(
                self.patterns, self.max_features).BeamSource()
        if self.fmt == "parquet":
            source = ParquetTFXIO(self.patterns)
            window_table.check_parquet_schema(source.ArrowSchema())
            to_table = window_table.from_parquet
        else:
            source = tfxio.TFExampleRecord(self.patterns, schema=tf_example_schema())
            to_table = window_table.from_tf_examples
        return (pipeline | f"Read{self.fmt.capitalize()}" >> source.BeamSource()
                | "ToWindowTable" >> beam.Map(to_table, self.max_features))
