"""Layer 5: the `upm` command line (`cli`: parsing and `upm run`), the flags job commands share
and the config file they read (`job_flags`), launching and watching a job (`launch`, with the
Flink REST client `flink_progress`), the standalone cluster and its commands, backfills,
governance commands, `validate`, and the embedded default."""
