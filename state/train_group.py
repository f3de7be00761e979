"""TrainGroup: the tenants of one engine instance train their ready micro-batches in one
TensorFlow call. No I/O, no clock.

A TensorFlow call costs far more than the arithmetic of a few micro-batches (measured: ~400 us
against ~60 us a step), so 1,000 tenants with a batch or two each would pay the call 1,000
times. When a trainer must train (its turn: a timer, a full queue, the end of input), the
group adds the ready batches of the other trainers waiting in it, up to `max_rows` rows and
`max_bytes` of parameters, to the same call (model/network.py `Learner.train`). Each of those
keeps its result as an `Ahead` and takes it at its own turn, in its own key's context, exactly
as if it trained then: a tenant's weights, predictions and snapshots are the same whichever
tenants share a call, and nothing of a tenant's state changes before its turn (so engine
state, checkpoints and outputs are as without the group). A result not taken (the tenant left
the engine's cache, its batches changed) is dropped and the batches are trained at the turn.

The group holds its trainers weakly: a trainer the engine drops leaves it.
"""

from __future__ import annotations

import weakref

from model.network import TrainJob, TrainResult, learner_for

MAX_ROWS = 4096  # rows of other tenants in one call (hashed inputs: 16 MiB at width 1,024)
MAX_BYTES = 16 << 20  # their parameters and optimizer slots (an MLP's are ~400 KB a tenant)
# Results held for turns still to come: an engine whose turns come in another order than the
# tenants waited (Flink's heap timers of one timestamp) would otherwise hold one for every
# tenant (measured: +4.4 GB at 100,000 tenants). Past this, a turn trains without companions.
MAX_HELD_BYTES = 256 << 20


class TrainGroup:
    def __init__(self, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._waiting: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.calls = 0  # TensorFlow training calls
        self.trained_ahead = 0  # tenants' batches trained in another tenant's call
        self._taken = (0, 0)
        self._holding: weakref.WeakSet = weakref.WeakSet()  # trainers holding a result

    def take_counts(self) -> dict[str, int]:
        """`train_calls` and `trained_ahead` since the last take (an engine's counters)."""
        calls, ahead = self._taken
        self._taken = (self.calls, self.trained_ahead)
        return {"train_calls": self.calls - calls, "trained_ahead": self.trained_ahead - ahead}

    def done(self, trainer) -> None:
        """`trainer` took (or dropped) the result it held."""
        self._holding.discard(trainer)

    def waiting(self, trainer) -> None:
        """`trainer` has ready batches (oldest waiting first)."""
        self._waiting.setdefault(id(trainer), trainer)

    def train(self, trainer, job: TrainJob) -> TrainResult:
        """Train `trainer`'s job now, with the ready batches of trainers waiting here that
        share its model; returns the job's result."""
        learner = learner_for(trainer.model)
        self._waiting.pop(id(trainer), None)
        jobs, aheads, taken = [job], [], []
        rows = scanned = 0
        size = max(_bytes(job), 1)
        # (a held result: new params and slots, and input statistics about twice their size)
        budget = min(self.max_bytes // size, MAX_HELD_BYTES // (3 * size) - len(self._holding))
        for key, other in self._waiting.items():  # oldest first; only as far as it needs
            if rows >= self.max_rows or len(aheads) >= budget or scanned >= 4 * budget:
                break
            scanned += 1
            if learner_for(other.model) is not learner:
                continue  # (another model config: it waits for a call of its own)
            taken.append(key)
            ahead = other.ahead()
            if ahead is not None:
                jobs.append(ahead.job)
                aheads.append((other, ahead))
                rows += len(ahead.job.y)
        for key in taken:
            self._waiting.pop(key, None)
        results = learner.train(jobs)
        for (other, ahead), result in zip(aheads, results[1:]):
            ahead.result = result
            self._holding.add(other)
            # (only the result is kept until the turn)
            ahead.job.x = ahead.job.y = ahead.job.params = ahead.job.slots = None
        self.calls += 1
        self.trained_ahead += len(aheads)
        return results[0]


def _bytes(job: TrainJob) -> int:
    return sum(a.nbytes for a in job.params.values()) + sum(a.nbytes for a in job.slots.values())
