"""Local record sinks of the Beam pipelines."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import apache_beam as beam


class AppendJsonLines(beam.DoFn):
    """A local sink: JSON lines appended to `<records>/<kind>/part-beam-<id>.jsonl`."""

    _lock = threading.Lock()

    def __init__(self, records_dir: str, kind: str):
        self.records_dir = records_dir
        self.kind = kind

    def setup(self):
        d = Path(self.records_dir) / self.kind
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / f"part-beam-{uuid.uuid4().hex[:12]}.jsonl"

    def process(self, line):
        with self._lock, open(self.path, "a") as f:
            f.write(line + "\n")
