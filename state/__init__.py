"""Layer 2, engine-free: the stream records and their parsing, the config, and the per-tenant
state machines (ReplayBuffer, TrainerState, DriftWindow). Pure Python + numpy; no engine import,
no I/O, no clock reads: time comes in as arguments."""
