"""Tests: `core/` runs under both runtimes with no engine; `flink/` uses a real Flink mini-cluster."""
