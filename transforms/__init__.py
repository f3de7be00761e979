"""Layer 3: engine adapters, thin translations of engine state and timers into core calls:
`transforms/flink/` (PyFlink functions) and `transforms/beam/` (Beam DoFns)."""
