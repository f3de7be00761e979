"""Layer 4: whole jobs assembled from transforms (the Flink streaming job, the Beam streaming
pipeline, the batch Beam backfill, the engine-free local reference run), their options and
the end-of-run summary."""
