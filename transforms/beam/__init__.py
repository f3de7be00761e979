"""Apache Beam adapters (stateful DoFns with timers) around the same core objects."""
