"""The backfill: history files trained per tenant as a batch Beam pipeline, with the same core
(and the same snapshots, bit for bit, for windows the stream would train in the same order).

    files ─► Read (tfx-bsl TFXIO) ─► ToWindowTable ─► SplitInvalid ─► KeyByTenant
                                                         │dead letters    │
                                                         ▼                ▼
                                          records/dead_letters      GroupByTenant ─► TrainTenant
                                                                                       │
      snapshots (mode "backfill": published, signed, registered) and records/{drift_scores,
      duplicates,gaps,stats}  ◄────────────────────────────────────────────────────────┘

A tenant's whole range is trained by one worker: training is sequential per tenant, so the
pipeline is parallel across tenants, and one tenant's history (columnar: about 100 bytes plus
the features per window) must fit in a worker's memory.

Locally it runs on Beam's FnApiRunner, named explicitly (unnamed, Beam's DirectRunner may try
to download the Prism runner). `beam_args` go to PipelineOptions unchanged, so
`--runner DataflowRunner --project P --region R --temp_location gs://B/tmp
--sdk_container_image <the image of docker/beam>` runs it on Dataflow, and `--runner
PortableRunner --job_endpoint HOST:PORT --environment_type DOCKER --environment_config <image>`
on a portable runner (Flink's job server, for one); neither is exercised here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from model.lifecycle.registry import open_registry
from pipelines.console import quiet_console
from pipelines.options import store_root
from state.config import UpmConfig
from transforms.beam import backfill
from transforms.beam.sinks import AppendJsonLines
from transforms.beam.tfxio_sources import ReadWindowTables, detect_format, matched_files


@dataclass(frozen=True)
class BackfillOptions:
    inputs: tuple[str, ...]                 # file patterns (local, gs://, s3://)
    start_ms: int | None = None             # windows with start_ms <= window_end < end_ms
    end_ms: int | None = None
    output_dir: str = "./upm-data"
    config: UpmConfig = field(default_factory=UpmConfig)
    input_format: str = "auto"              # auto (by file suffix), jsonl, parquet, tfrecord
    warm_start: bool = True                 # continue each tenant from its newest snapshot
    beam_args: tuple[str, ...] = ()         # extra Beam pipeline options (another runner)

    @property
    def store_root(self) -> str:
        return store_root(self.output_dir, self.config)


@dataclass
class BackfillResult:
    input_format: str
    files: int
    seconds: float
    totals: dict[str, int]
    tenants: dict[str, dict]


def build(p: beam.Pipeline, opts: BackfillOptions, fmt: str) -> None:
    cfg = opts.config
    tables = p | "Read" >> ReadWindowTables(list(opts.inputs), fmt, cfg.source.max_features)
    split = tables | "SplitInvalid" >> beam.ParDo(backfill.SplitInvalid()).with_outputs(
        "dead_letters", main="rows")
    trained = (split.rows
               | "KeyByTenant" >> beam.FlatMap(backfill.key_by_tenant)
               | "GroupByTenant" >> beam.GroupByKey()
               | "TrainTenant" >> beam.ParDo(backfill.TrainTenant(
                   cfg, opts.store_root, opts.start_ms, opts.end_ms, opts.warm_start))
               .with_outputs("drift_scores", "duplicates", "gaps", "stats", "refusals",
                             "dead_letters", main="snapshots"))
    dead_letters = ((split.dead_letters, trained.dead_letters)
                    | "DeadLetters" >> beam.Flatten())
    records = str((os.path.join(opts.output_dir, "records")))
    for kind, pc in (("dead_letters", dead_letters), ("snapshots", trained.snapshots),
                     ("drift_scores", trained.drift_scores), ("duplicates", trained.duplicates),
                     ("gaps", trained.gaps), ("stats", trained.stats),
                     ("refusals", trained.refusals)):
        pc | f"Write{kind}" >> beam.ParDo(AppendJsonLines(records, kind))


def run(opts: BackfillOptions) -> BackfillResult:
    if opts.start_ms is not None and opts.end_ms is not None and opts.end_ms <= opts.start_ms:
        raise ValueError("--to must be after --from")
    quiet_console()
    options = PipelineOptions(flags=list(opts.beam_args))
    FileSystems.set_options(options)  # e.g. --s3_endpoint_url, before the inputs are listed
    # a local directory means the files in it
    patterns = [os.path.join(i, "*") if os.path.isdir(i) else i for i in opts.inputs]
    opts = dataclasses.replace(opts, inputs=tuple(patterns))
    files = sum(len(matched_files(pattern)) for pattern in patterns)
    fmt = detect_format(patterns) if opts.input_format == "auto" else opts.input_format
    named = any(a.startswith("--runner") for a in opts.beam_args)
    started = time.time()
    p = beam.Pipeline(runner=None if named else FnApiRunner(), options=options)
    build(p, opts, fmt)
    result = p.run()
    result.wait_until_finish()
    totals, tenants = _counters(result)
    registry = open_registry(opts.store_root)
    for tenant, counts in tenants.items():
        t = registry.view(tenant)
        newest = t.newest() if t else None
        counts["last_version"] = newest.version if newest else 0
    return BackfillResult(fmt, files, time.time() - started, totals, tenants)


def _counters(result) -> tuple[dict[str, int], dict[str, dict]]:
    totals: dict[str, int] = {}
    tenants: dict[str, dict] = {}
    prefix = backfill.tenant_namespace("")
    for c in result.metrics().query(MetricsFilter())["counters"]:
        ns, name = c.key.metric.namespace, c.key.metric.name
        value = c.committed if c.committed is not None else c.attempted
        if ns == backfill.NAMESPACE:
            totals[name] = totals.get(name, 0) + value
        elif ns.startswith(prefix):
            t = tenants.setdefault(ns[len(prefix):], {})
            t[name] = t.get(name, 0) + value
    return totals, tenants


def balanced(counts: dict[str, int]) -> bool:
    """windows = out_of_range + duplicates + unlabeled + label_refused + trained + refused (and,
    for the run's totals, rows = windows + feedback + dead_letters: the rows that were not
    windows; a label_refused window is dead-lettered too, and counted as a window)."""
    g = counts.get
    ok = g("windows", 0) == g("out_of_range", 0) + g("duplicates", 0) + g("unlabeled", 0) \
        + g("label_refused", 0) + g("trained", 0) + g("refused", 0)
    if "rows" in counts:
        ok = ok and g("rows") == g("windows", 0) + g("feedback", 0) + g("dead_letters", 0)
    return ok


COLUMNS = ("windows", "feedback", "out_of_range", "duplicates", "unlabeled", "label_refused",
           "trained", "refused", "dead_letters", "gaps", "snapshots", "last_version")


def format_table(result: BackfillResult) -> str:
    head = ["tenant", *COLUMNS, "ok"]
    rows = [[t, *(str(c.get(k, 0)) for k in COLUMNS), "yes" if balanced(c) else "NO"]
            for t, c in sorted(result.tenants.items())]
    rows.append(["TOTAL", *("" if k == "last_version" else str(result.totals.get(k, 0))
                            for k in COLUMNS),
                 "yes" if balanced(result.totals) else "NO"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths))) for r in [head, *rows])
