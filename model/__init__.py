"""Layer 1: the ML model and its lifecycle: feature hashing, the functional TensorFlow model and
its update step, device choice, the snapshot format (codec, manifest, sha256), snapshot stores
(local, GCS, S3), signing, the registry, promotion policy and governance actions, retention, and
the adapter agents embed."""
