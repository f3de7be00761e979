"""Apache Beam adapters: stateful DoFns with event-time timers (Parse, TenantDoFn: a tenant's
ReplayBuffer -> Trainer -> DriftWindow, PublishSnapshot, Govern) around the same core state
machine as the Flink functions; the
backfill's tfx-bsl TFXIO readers and batch steps; local record sinks."""
