"""Layer 5: the `upm` command line: running jobs (embedded, on a standalone Flink cluster, on
Beam), backfills, the cluster commands, governance commands, `validate`, and the embedded
default."""
