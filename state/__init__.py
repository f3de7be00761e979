"""Layer 2, engine-free: the stream records and their parsing, the config, the per-tenant state
machines (ReplayBuffer, TrainerState, DriftWindow), prequential scores and the champion/
challenger judges, the window table (records as Arrow columns)
and one tenant's backfill. Pure Python + numpy (+ pyarrow for columns); no engine import, no
I/O, no clock reads: time comes in as arguments."""
