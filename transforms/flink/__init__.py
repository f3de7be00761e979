"""PyFlink adapters: Parse, ReplayBuffer, Trainer, SnapshotWriter and DriftMonitor functions."""
