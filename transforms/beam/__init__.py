"""Apache Beam adapters: stateful DoFns with event-time timers (Parse, ReplayBuffer+Trainer,
DriftMonitor, PublishSnapshot, Govern) around the same core objects as the Flink functions; the
backfill's tfx-bsl TFXIO readers and batch steps; local record sinks."""
