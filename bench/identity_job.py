"""The cheapest keyed PyFlink job a user could write, the baseline of the whole-job benchmark:

    FileSource -> Python json.loads map -> key_by(tenant) -> KeyedProcessFunction that updates
    one ValueState (a per-key count) -> no output

Thread mode, the same Flink configuration as the UPM job.
"""

from __future__ import annotations

import json

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSource, StreamFormat
from pyflink.datastream.functions import KeyedProcessFunction
from pyflink.datastream.state import ValueStateDescriptor


class CountPerKey(KeyedProcessFunction):
    def open(self, runtime_context):
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))

    def process_element(self, value, ctx):
        self.count.update((self.count.value() or 0) + 1)
        return iter(())


def _tenant(doc) -> str:
    return str(doc.get("tenant_id", "")) if isinstance(doc, dict) else ""


def _loads(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return {}


def build(env: StreamExecutionEnvironment, paths: list[str]) -> None:
    src = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *paths).build()
    (env.from_source(src, WatermarkStrategy.no_watermarks(), "Files")
     .map(_loads, output_type=Types.PICKLED_BYTE_ARRAY()).name("json.loads")
     .key_by(_tenant, key_type=Types.STRING())
     .process(CountPerKey()).name("CountPerKey"))
