"""Layer 1: the ML model: feature hashing, online standardization, the functional TensorFlow
model and its update step, the one thread all TensorFlow work runs on, device choice, and the
snapshot format (codec, manifest, sha256).
The snapshot's lifecycle (stores, signing, registry, policy, governance, retention, adapter) is
model/lifecycle/."""
