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
# Results held for turns still to come. An engine's turns may come in another order than the
# tenants waited (Flink fires the timers of one timestamp in its queue's order, not theirs), so
# at the end of an input every tenant may hold one (unpacked: +4.4 GB at 100,000 tenants). The
# first PLAIN_HELD_BYTES of results are held as they are; past that they are held packed
# (state/packed.py: a linear tenant's ~37 KB in ~2 KB, ~60 us to pack and unpack). Past
# MAX_HELD_BYTES, a turn trains without companions.
PLAIN_HELD_BYTES = 64 << 20
MAX_HELD_BYTES = 256 << 20


class TrainGroup:
    def __init__(self, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._waiting: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.calls = 0  # TensorFlow training calls
        self.trained_ahead = 0  # tenants' batches trained in another tenant's call
        self._taken = (0, 0)
        # trainers holding a result -> the bytes it holds, and their sum
        self._holding: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._held = self._held_count = 0
        self._packed_size = 0  # the largest packed result seen (an estimate of the next)

    def take_counts(self) -> dict[str, int]:
        """`train_calls` and `trained_ahead` since the last take (an engine's counters)."""
        calls, ahead = self._taken
        self._taken = (self.calls, self.trained_ahead)
        return {"train_calls": self.calls - calls, "trained_ahead": self.trained_ahead - ahead}

    def done(self, trainer) -> None:
        """`trainer` took (or dropped) the result it held."""
        nbytes = self._holding.pop(trainer, None)
        if nbytes is not None:
            self._held -= nbytes
            self._held_count -= 1

    def _hold(self, trainer, nbytes: int) -> None:
        self.done(trainer)  # (a result it held before, if any, is let go)
        self._holding[trainer] = nbytes
        self._held += nbytes
        self._held_count += 1

    def _held_bytes(self) -> int:
        """The bytes of results held (summed again only when a holder was dropped unseen)."""
        if len(self._holding) != self._held_count:
            self._held, self._held_count = sum(self._holding.values()), len(self._holding)
        return self._held

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
        budget = min(self.max_bytes // size, self._room(self._held_bytes(), 3 * size))
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
            nbytes = ahead.hold(result, packed=self._held + 3 * size > PLAIN_HELD_BYTES)
            if ahead.packed is not None:
                self._packed_size = max(self._packed_size, nbytes)
            self._hold(other, nbytes)
        self.calls += 1
        self.trained_ahead += len(aheads)
        return results[0]

    def _room(self, held: int, plain: int) -> int:
        """How many more results fit in what may be held, `held` bytes held now, `plain` the
        bytes of one held plain."""
        room = max(0, PLAIN_HELD_BYTES - held) // plain
        packed = self._packed_size or plain // 8  # (until one was packed: a guess)
        return room + max(0, MAX_HELD_BYTES - max(held, PLAIN_HELD_BYTES)) // packed


def _bytes(job: TrainJob) -> int:
    return sum(a.nbytes for a in job.params.values()) + sum(a.nbytes for a in job.slots.values())
