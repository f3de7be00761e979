"""Layer 3: engine adapters, thin translations of engine state and timers into core calls:
`transforms/flink/` (PyFlink functions, Kafka) and `transforms/beam/` (Beam DoFns), plus the
engine-free steps both share (`publish.py`)."""
