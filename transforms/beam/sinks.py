"""Local record sinks of the Beam pipelines."""

from __future__ import annotations

import uuid
from pathlib import Path

import apache_beam as beam


class AppendJsonLines(beam.DoFn):
    """A local sink: JSON lines appended to `<records>/<kind>/part-beam-<id>.jsonl`, one
    append per bundle (each line on its own open and write was most of a backfill's sink time);
    a bundle's lines are on disk when the bundle is done, before the runner commits it."""

    def __init__(self, records_dir: str, kind: str):
        self.records_dir = records_dir
        self.kind = kind

    def setup(self):
        d = Path(self.records_dir) / self.kind
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / f"part-beam-{uuid.uuid4().hex[:12]}.jsonl"

    def start_bundle(self):
        self.lines = []

    def process(self, line):
        self.lines.append(line)

    def finish_bundle(self):
        if self.lines:
            with open(self.path, "a") as f:
                f.write("\n".join(self.lines) + "\n")
            self.lines = []
