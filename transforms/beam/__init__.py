"""Apache Beam adapters (stateful DoFns with event-time timers) around the core objects; the
Beam issue fills this package, nothing here is used yet."""
