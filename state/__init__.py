"""Layer 2, engine-free: the stream records and their parsing, the config, the per-tenant state
machines (ReplayBuffer, TrainerState, DriftWindow), prequential scores and the champion/
challenger judges, the window table (records as Arrow columns)
and one tenant's backfill. Pure Python + numpy (+ pyarrow for columns); no engine import, no
I/O, no clock reads: time comes in as arguments.

Every per-tenant state machine (ReplayBuffer, TrainerState, DriftWindow and the TenantPipeline
that chains them) has one surface, so an engine holds any of them the same way:
`new(tenant_id, config)`, `from_parts(parts, config)` / `from_bytes(blob, config)` (the current
config, not the saved one), `parts()` / `to_bytes()`, `drain_changes(prefix)` and `next_timer()`.
The dead-letter reasons are in `reasons.py`, one text per rule; `tenant_cache.py` bounds the
pipelines an engine keeps in memory (parking the idle ones); `train_group.py` lets the tenants an
engine holds train their ready batches in one TensorFlow call; `packed.py` holds a trainer's arrays
compressed in memory (parked tenants, results waiting for their turn, the `w`/`j` state parts)."""
