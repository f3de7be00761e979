"""PyFlink adapters: Parse, ReplayBuffer, Trainer, SnapshotWriter, DriftMonitor and Governor
functions; the Kafka source and sink; the build step that fetches the pinned connector jars."""
