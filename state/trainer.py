"""TrainerState: one tenant's model, trained test-then-train on micro-batches. No I/O, no clock.

Windows arrive in event-time order from the ReplayBuffer. A window with a label joins the
current micro-batch; one without waits (bounded) for its Feedback, and a Feedback that arrives
before its window waits (bounded) for the window. When the batch holds `batch_size` windows, or
reaching `snapshot_interval` trained windows needs fewer, the batch is *ready*. Each ready batch
is *tested* (shadow predictions by the weights of every step before it, one ShadowDelta per
window) and then *trained* (one step of `model.optimizer`). Every `snapshot_interval` trained
windows a Snapshot is cut. While paused, batches are scored (ShadowDeltas still flow, so drift is
still watched) but not trained.

Ready batches are trained `steps_per_call` at a time in one TensorFlow call (a graph loop over
the same steps: the arithmetic, and so every weight, prediction and snapshot, is that of one
call per batch; measured in bench/). A TensorFlow call costs about the same for 1 or 16 steps,
so this is what makes the streaming path cheap. Ready batches are also trained when reaching
the next snapshot needs no more, and whenever the engine calls `drain()` (its timers, before
drift is judged, and at the end of input), so a quiet tenant is not left waiting. In an engine
that holds many tenants (`group`, state/train_group.py) the call also trains the other
tenants' ready batches; each takes that result at its own turn (`Ahead`), bit for bit what it
would have got then.

With `model.head = "auto"` the head is chosen when the first labelled micro-batch is complete
(ModelConfig.resolve: a classifier if its labels are all 0 or 1, else a regressor), before it is
tested; from then on a labelled window the chosen head cannot learn (a label 7.5 for a
classifier) is refused with a reason (TrainerOutput.refused: the engine dead-letters it)
instead of joining a batch. The parameters of `auto` are those of both heads it can choose.

Accounting per tenant: every window handed to `on_window` ends up in exactly one of
`trained`, `paused_skipped`, `awaiting_label` (still held), `label_expired` (evicted when the
waiting room overflowed), `label_refused`, or the current `batch` (until the next step or
`flush`).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from model.hashing import FeatureHasher
from model import standardize
from model.network import (ModelConfig, TrainJob, TrainResult, init_params, init_slots,
                           learner_for, slots_or_init)
from model.snapshot import Snapshot, decode, encode, snapshot_id_for
from state.challenge import Judge, challenge_record
from state.drift import drift_scores
from state.packed import Packed, pack, unpack
from state.parts import Changes
from state.prequential import Prequential
from state.records import FeatureWindow, Feedback, ShadowDelta

MODES = ("shadow", "canary", "active", "backfill")
# The seeds' snapshot freshness SLO per trainer mode (the time since the last snapshot was
# written): what the alert rules in runners/monitoring/ hold each tenant to.
FRESHNESS_SLO_MS = {"shadow": 30_000, "canary": 10_000, "active": 10_000}


@dataclass(frozen=True)
class TrainerConfig:
    snapshot_interval: int = 1000
    # The seeds had Adam at 0.001 in batches of 32: 2-11 points behind River. These were
    # measured (bench/quality.py): FTRL at 0.3 in batches of 4 is within 0.2 points of it.
    learning_rate: float = 0.3
    batch_size: int = 4
    mode: str = "shadow"
    max_pending_labels: int = 10_000
    drift_scale: float = 1.0
    steps_per_call: int = 64  # 256 windows per TensorFlow call at the default batch size

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"trainer.mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class BlockOutput:
    """What `train_block` did: rows consumed, the shadow prediction of each consumed row (made
    before the step that trained it), which snapshot each prediction descends from, as
    (first_row, end_row, snapshot_id) segments, and the snapshots cut."""
    consumed: int
    predictions: np.ndarray
    segments: list[tuple[int, int, str | None]] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass
class Ahead:
    """A trainer's ready `batches` trained before its turn, in a TrainGroup call another
    tenant made (state/train_group.py): the job, its result, and the input statistics and
    target scaling that `_inputs` would have given. Not state: the trainer's own state changes
    only when it takes this at its turn, exactly as if it trained then."""
    batches: tuple
    job: TrainJob
    back: np.ndarray | None
    norm: dict | None
    result: TrainResult | None = None
    packed: Packed | None = None  # the result's params and slots and `norm`, while packed
    packed_norm: bool = False  # whether `packed` holds a `norm`

    def hold(self, result: TrainResult, packed: bool) -> int:
        """Keep `result` (packed: its arrays compressed) until the turn; returns the bytes
        held. Only the result is kept: the job's inputs and arrays are let go."""
        self.result = result
        self.job.x = self.job.y = self.job.params = self.job.slots = None
        if not packed:  # (new params and slots, and input statistics about twice their size)
            return 3 * sum(a.nbytes for d in (result.params, result.slots) for a in d.values())
        self.packed = pack({"p": result.params, "s": result.slots, "n": self.norm or {}})
        self.packed_norm = self.norm is not None
        result.params = result.slots = self.norm = None
        return self.packed.nbytes

    def taken(self) -> tuple[TrainResult, dict | None]:
        """The result and the input statistics after it, unpacked."""
        if self.packed is not None:
            groups = unpack(self.packed, ("p", "s", "n"))
            self.result.params, self.result.slots = groups["p"], groups["s"]
            self.norm = groups["n"] if self.packed_norm else None
            self.packed = None
        return self.result, self.norm

    def fits(self, ts: "TrainerState", batches: list) -> bool:
        """Whether these are the first of `batches` and `ts` has not moved since."""
        return (self.result is not None and ts.step == self.job.step
                and len(batches) >= len(self.batches)
                and all(a is b for a, b in zip(self.batches, batches)))


@dataclass
class TrainerOutput:
    deltas: list[ShadowDelta] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    refused: list[tuple[FeatureWindow, str]] = field(default_factory=list)  # (window, reason)

    def extend(self, other: "TrainerOutput") -> None:
        self.deltas += other.deltas
        self.snapshots += other.snapshots
        self.refused += other.refused


COUNTERS = ("windows", "trained", "paused_skipped", "label_expired", "label_refused", "feedback",
            "feedback_unmatched", "feedback_duplicate", "steps")

_hashers: dict[int, FeatureHasher] = {}


def _slots_in(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[len("slot_"):]: v for k, v in arrays.items() if k.startswith("slot_")}


def _hasher(width: int) -> FeatureHasher:
    h = _hashers.get(width)
    if h is None:
        h = _hashers[width] = FeatureHasher(width)
    return h


class _Unparked:
    """A trainer's array dict (`params`, `slots`, `norm`), decoded first if the trainer is
    parked: reading or replacing one unparks all three."""

    def __set_name__(self, owner, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, ts, owner=None):
        if ts is None:
            return self
        if ts._parked is not None:
            ts._unpark()
        return getattr(ts, self.attr)

    def __set__(self, ts, value) -> None:
        if ts._parked is not None:
            ts._unpark()
        setattr(ts, self.attr, value)


class TrainerState:
    def __init__(self, tenant_id: str, model: ModelConfig = ModelConfig(),
                 config: TrainerConfig = TrainerConfig(), trainer_id: str | None = None):
        self.tenant_id = tenant_id
        self.trainer_id = trainer_id or f"{tenant_id}-trainer"
        self.model = model
        self.config = config
        self._parked: tuple[Packed, bool] | None = None  # (arrays, has norm) while parked
        params, slots, norm = _fresh_arrays(model, config.learning_rate)
        self._params = {k: a.copy() for k, a in params.items()}
        self._slots = {k: a.copy() for k, a in slots.items()}
        self._norm = None if norm is None else {k: a.copy() for k, a in norm.items()}
        self.step = 0
        self.version = 0
        self.last_snapshot_id: str | None = None
        self.since_snapshot = 0
        self.range_start: int | None = None
        self.range_end: int | None = None
        self.last_loss = float("nan")
        # Prequential scores of the shadow predictions: since the start, and since the last
        # snapshot (the interval a snapshot's manifest reports).
        self.score_total = Prequential()
        self.score_interval = Prequential()
        # Champion/challenger (state/challenge.py): the tenant's active snapshot, once the engine
        # sets it, and the last snapshot cut after that, both scored on every window scored.
        self.champion: Judge | None = None
        self.candidate: Judge | None = None
        self.paused = False
        self.batch: list[FeatureWindow] = []
        self.ready: list[list[FeatureWindow]] = []  # full batches, oldest first, not yet trained
        self.ready_rows = 0  # windows in `ready`
        self.awaiting: OrderedDict[str, FeatureWindow] = OrderedDict()
        self.early_labels: OrderedDict[str, float] = OrderedDict()
        self.counters = {k: 0 for k in COUNTERS}
        # Engine-state bookkeeping (parts, below): sequence numbers that keep the order of the
        # queued windows (ready batches, then the batch) and of the waiting rooms.
        self.queue_start = 0  # sequence number of the oldest queued window
        self.arrivals = 0
        self._seq: dict[str, int] = {}  # "a/<id>" or "e/<id>" -> arrival number
        self.changes = Changes()
        self.changes.mark("m", new=True)
        self.changes.mark("w", new=True)
        self._static_meta: bytes | None = None
        # Set by an engine that holds many tenants (state/train_group.py): ready batches are
        # trained in one TensorFlow call with other tenants'. Not state.
        self.group = None
        self._ahead: Ahead | None = None

    # -- memory ----------------------------------------------------------------------------

    def park(self) -> None:
        """Hold the weights, optimizer slots and input statistics compressed (state/packed.py:
        a linear tenant's ~38 KB in ~1 KB). An engine that keeps many tenants in memory parks
        those it is not working on; the first use of an array unparks them all again."""
        if self._parked is None:
            self._parked = (pack({"p": self._params, "s": self._slots, "n": self._norm or {}}),
                            self._norm is not None)
            self._params = self._slots = self._norm = None
            self._static_meta = None  # (~1.5 KB, pickled again when next needed)

    def _unpark(self) -> None:
        packed, has_norm = self._parked
        groups = unpack(packed, ("p", "s", "n"))
        self._parked = None
        self._params, self._slots = groups["p"], groups["s"]
        self._norm = groups["n"] if has_norm else None

    params = _Unparked()
    slots = _Unparked()
    norm = _Unparked()

    # -- events ----------------------------------------------------------------------------

    def on_window(self, w: FeatureWindow) -> TrainerOutput:
        self.counters["windows"] += 1
        self.changes.mark("m")
        if w.label is None:
            label = self.early_labels.pop(w.window_id, None)
            if label is None:
                self.awaiting[w.window_id] = w
                self._arrived("a/" + w.window_id)
                while len(self.awaiting) > self.config.max_pending_labels:
                    self._left("a/" + self.awaiting.popitem(last=False)[0])
                    self.counters["label_expired"] += 1
                return TrainerOutput()
            self._left("e/" + w.window_id)
            w = w.with_label(label)
        return self._enqueue(w)

    def on_feedback(self, fb: Feedback) -> TrainerOutput:
        self.counters["feedback"] += 1
        self.changes.mark("m")
        w = self.awaiting.pop(fb.window_id, None)
        if w is not None:
            self._left("a/" + fb.window_id)
            return self._enqueue(w.with_label(fb.label))
        if fb.window_id in self.early_labels:
            self.counters["feedback_duplicate"] += 1
            return TrainerOutput()
        self.counters["feedback_unmatched"] += 1
        self.early_labels[fb.window_id] = fb.label
        self._arrived("e/" + fb.window_id)
        while len(self.early_labels) > self.config.max_pending_labels:
            self._left("e/" + self.early_labels.popitem(last=False)[0])
        return TrainerOutput()

    def _arrived(self, key: str) -> None:
        self._seq[key] = self.arrivals
        self.arrivals += 1
        self.changes.mark(key, new=True)

    def _left(self, key: str) -> None:
        del self._seq[key]
        self.changes.drop(key)

    def drain(self) -> TrainerOutput:
        """Train the ready batches now (the engine's timers; before drift is judged)."""
        return self._train_ready() if self.ready else TrainerOutput()

    def flush(self) -> TrainerOutput:
        """Train the ready batches and the partial one now (end of input)."""
        self.close_batch()
        return self.drain()

    def close_batch(self) -> None:
        """Make the partial batch ready (end of input): the next drain trains it."""
        if self.batch:
            self._batch_ready()

    def train_block(self, x: np.ndarray, y: np.ndarray, window_start: np.ndarray,
                    window_end: np.ndarray, final: bool = True) -> BlockOutput:
        """Train hashed, labeled windows already in event-time order (a backfill's columns) in
        the micro-batches `on_window` would form for them one by one: same batch boundaries,
        steps, snapshot cuts and manifests. Runs of full batches go to TensorFlow in one call.
        With `final=False` a trailing part batch is left unconsumed (the caller passes it again
        with the next block); with `final=True` it is trained, as `flush` would."""
        if self.batch or self.ready or self.paused or not self.model.resolved:
            raise ValueError("train_block needs a running trainer with no part batch and its "
                             "head chosen (resolve_head)")
        n, size, interval = len(y), self.config.batch_size, self.config.snapshot_interval
        out = BlockOutput(0, np.empty(n, np.float32))
        i = seg = 0
        while i < n:
            room = interval - self.since_snapshot
            k = min(room, n - i) // size
            if k >= 2:
                sizes = [size] * k
            else:
                rows = min(size, room, n - i)
                if rows < min(size, room) and not final:
                    break
                sizes = [rows]
            rows = sum(sizes)
            self._judge(x[i:i + rows], y[i:i + rows])
            xs, ys, back = self._inputs(x[i:i + rows], y[i:i + rows], sizes)
            preds = self._learn(xs, ys, sizes, int(window_start[i]), window_end[i:i + rows])
            out.predictions[i:i + rows] = self._outputs(preds, back)
            self._score(out.predictions[i:i + rows], y[i:i + rows])
            self.counters["windows"] += rows
            i += rows
            if self.since_snapshot >= interval:
                out.segments.append((seg, i, self.last_snapshot_id))
                seg = i
                out.snapshots.append(self._cut_snapshot())
        if seg < i:
            out.segments.append((seg, i, self.last_snapshot_id))
        self.changes.mark("m")
        self.changes.mark("w")
        out.consumed = i
        out.predictions = out.predictions[:i]
        return out

    def resolve_head(self, labels) -> None:
        """Choose the head of `model.head = "auto"` from the first labelled micro-batch's labels
        (no change once chosen, or for an explicit head)."""
        if not self.model.resolved:
            self.model = self.model.resolve(labels)
            self._static_meta = None
            self.changes.mark("m")

    def snapshot_now(self) -> Snapshot | None:
        """Cut a snapshot of what was trained since the last one (end of a backfill), if any."""
        return self._cut_snapshot() if self.since_snapshot and not self.batch else None

    def pause(self) -> TrainerOutput:
        """Stop training (batches are still scored). Ready batches are trained first."""
        out = self.drain()
        self.paused = True
        self.changes.mark("m")
        return out

    def resume(self) -> TrainerOutput:
        out = self.drain()
        self.paused = False
        self.changes.mark("m")
        return out

    # -- queries ---------------------------------------------------------------------------

    @classmethod
    def new(cls, tenant_id: str, config: TrainerConfig = TrainerConfig(),
            model: ModelConfig = ModelConfig()) -> "TrainerState":
        """A trainer with fresh weights of the shapes `model` gives (restores keep theirs)."""
        return cls(tenant_id, model, config)

    def next_timer(self) -> int | None:
        """The event time this trainer wants a timer at (the engine's surface for every core
        object): `next_drain_time`."""
        return self.next_drain_time()

    def next_drain_time(self) -> int | None:
        """Event time after which the ready batches should be trained even if no more arrive:
        the end of the oldest ready batch's newest window (the engine's timer there drains)."""
        return max(w.event_time for w in self.ready[0]) if self.ready else None

    @property
    def trained(self) -> int:
        return self.counters["trained"]

    @property
    def pending(self) -> int:
        """Windows not trained for want of a label: still waiting, or evicted while waiting."""
        return len(self.awaiting) + self.counters["label_expired"]

    def predict(self, rows: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_hashed(_hasher(self.model.input_width).transform(rows))

    def predict_hashed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return standardize.predict(self.model, self.params, self.norm, x)

    def _inputs(self, x: np.ndarray, y: np.ndarray, sizes: list[int]):
        """Consecutive micro-batches as the model takes them: inputs (and a numeric head's
        targets) standardized by the statistics before each batch, which is then counted
        (model/standardize.py). Returns x, y and how to scale predictions back (or None)."""
        if self.norm is None:
            return x, y, None
        numeric = self.model.prediction_kind == "numeric"
        xs, ys, back, self.norm = standardize.transform_batches(self.norm, x, y, sizes, numeric)
        return xs, ys, back if numeric else None

    @staticmethod
    def _outputs(preds: np.ndarray, back) -> np.ndarray:
        return preds if back is None else standardize.unscale(preds, back)

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, w: FeatureWindow) -> TrainerOutput:
        reason = self.model.refusal(w.label)
        if reason is not None:
            self.counters["label_refused"] += 1
            return TrainerOutput(refused=[(w, reason)])
        ready_rows = self.ready_rows
        self.changes.mark(f"q/{self.queue_start + ready_rows + len(self.batch)}", new=True)
        self.batch.append(w)
        to_boundary = self.config.snapshot_interval - self.since_snapshot - ready_rows
        if len(self.batch) >= min(self.config.batch_size, to_boundary):
            self._batch_ready()
            if (self.paused or len(self.ready) >= self.config.steps_per_call
                    or len(self.ready[-1]) == to_boundary):
                return self._train_ready()
        return TrainerOutput()

    def _batch_ready(self) -> None:
        self.resolve_head([w.label for w in self.batch])
        self.ready.append(self.batch)
        self.ready_rows += len(self.batch)
        self.batch = []
        if self.group is not None:
            self.group.waiting(self)

    def _train_ready(self) -> TrainerOutput:
        """Test then train every ready batch, in order (no snapshot boundary inside: `_enqueue`
        trains as soon as the ready rows reach it)."""
        batches, self.ready, self.ready_rows = self.ready, [], 0
        windows = [w for b in batches for w in b]
        for seq in range(self.queue_start, self.queue_start + len(windows)):
            self.changes.drop(f"q/{seq}")
        self.queue_start += len(windows)
        self.changes.mark("m")
        if not self.paused:
            self.changes.mark("w")
        y = np.array([w.label for w in windows], dtype=np.float32)
        judging = self.champion is not None and self.candidate is not None
        x = self._hashed(windows) if judging or self.paused else None
        self._judge(x, y)
        if self.paused:  # scored, not learned from: the statistics are not counted either
            preds, _ = self.predict_hashed(x)
            self.counters["paused_skipped"] += len(windows)
        else:
            preds = self._fit(batches, windows, y, x)
        out = TrainerOutput()
        kind = self.model.prediction_kind
        truth = np.array([w.label for w in windows], np.float64)
        self._score(preds, truth)
        scores = drift_scores(preds, truth, kind, self.config.drift_scale).tolist()
        for w, p, score in zip(windows, preds.tolist(), scores):
            out.deltas.append(ShadowDelta.built(
                tenant_id=self.tenant_id, trainer_id=self.trainer_id, prediction_id=w.window_id,
                shadow_prediction=p, ground_truth=w.label, drift_score=score,
                timestamp=w.event_time, model_version=self.version,
                snapshot_id=self.last_snapshot_id))
        if self.since_snapshot >= self.config.snapshot_interval:
            out.snapshots.append(self._cut_snapshot())
        return out

    def _hashed(self, windows: list[FeatureWindow]) -> np.ndarray:
        return _hasher(self.model.input_width).transform([w.features for w in windows])

    def _fit(self, batches: list, windows: list[FeatureWindow], y: np.ndarray,
             x: np.ndarray | None) -> np.ndarray:
        """Test then train the ready `batches` (their `windows`, labels `y`, hashed rows `x`
        if already made): those a TrainGroup trained ahead take that result, the rest are
        trained now (with other tenants', in a group). Returns the predictions made before
        each batch's step."""
        preds = []
        ahead = self._drop_ahead()
        done = rows = 0  # batches and windows trained ahead
        if ahead is not None and ahead.fits(self, batches):
            done, rows = len(ahead.batches), sum(ahead.job.sizes)
            result, norm = ahead.taken()
            if norm is not None:
                self.norm = norm
            preds.append(self._commit(ahead.job, result, ahead.back, windows[:rows]))
        if done < len(batches):
            rest = windows[rows:]
            job, back, norm = self._job(batches[done:], rest, y[rows:],
                                        None if x is None else x[rows:])
            if norm is not None:
                self.norm = norm
            result = (self.group.train(self, job) if self.group is not None
                      else learner_for(self.model).train([job])[0])
            preds.append(self._commit(job, result, back, rest))
        return preds[0] if len(preds) == 1 else np.concatenate(preds)

    def _job(self, batches: list, windows: list[FeatureWindow], y: np.ndarray,
             x: np.ndarray | None):
        """(TrainJob, target scaling, new input statistics) of training `batches` now, with
        nothing of this trainer changed yet."""
        x = self._hashed(windows) if x is None else x
        sizes = [len(b) for b in batches]
        back = norm = None
        if self.norm is not None:
            numeric = self.model.prediction_kind == "numeric"
            x, y, back, norm = standardize.transform_batches(self.norm, x, y, sizes, numeric)
            back = back if numeric else None
        job = TrainJob(self.params, self.slots, self.step, self.config.learning_rate, x, y, sizes)
        return job, back, norm

    def ahead(self) -> Ahead | None:
        """The ready batches as an Ahead to be trained by a TrainGroup before this trainer's
        turn (None: nothing to train ahead). A parked trainer stays parked."""
        if self.paused or not self.ready or self._ahead is not None:
            return None
        parked = self._parked is not None
        batches = tuple(self.ready)
        windows = [w for b in batches for w in b]
        y = np.array([w.label for w in windows], dtype=np.float32)
        job, back, norm = self._job(list(batches), windows, y, None)
        if parked:
            self.park()
        self._ahead = Ahead(batches, job, back, norm)
        return self._ahead

    def _drop_ahead(self) -> Ahead | None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self.group is not None:
            self.group.done(self)
        return ahead

    def _commit(self, job: TrainJob, result: TrainResult, back,
                windows: list[FeatureWindow]) -> np.ndarray:
        self._apply_result(job, result, windows[0].window_start,
                           max(w.window_end for w in windows))
        return self._outputs(result.predictions, back)

    def _apply_result(self, job: TrainJob, result: TrainResult, start: int, end: int) -> None:
        """The trainer after `job` trained into `result` (streaming and block paths alike)."""
        self.params, self.slots = result.params, result.slots
        self._account(len(job.sizes), len(result.predictions), float(result.losses[-1]),
                      start, end)

    def _score(self, preds, truth) -> None:
        # Labels as the block path holds them (float32), so both paths score alike.
        kind, truth = self.model.prediction_kind, np.asarray(truth, np.float32)
        self.score_total.add(preds, truth, kind)
        self.score_interval.add(preds, truth, kind)

    def set_champion(self, snap: Snapshot | None) -> None:
        """The snapshot the tenant's `active` stage points to (None: no active), as the engine
        last read it. A snapshot of another model config cannot be compared and is ignored.
        The candidate is the last snapshot cut if nothing was trained since (the engine calls
        this right after a cut, or at the first record), else the next one cut."""
        if snap is not None and snap.manifest.get("model") != self.model.to_dict():
            snap = None
        sid = snap.manifest["snapshot_id"] if snap is not None else None
        if sid == (self.champion.snapshot_id if self.champion else None):
            return
        had = self.champion is not None
        self.changes.mark("m")
        if snap is None:
            self.champion = self.candidate = None
            self.changes.drop("j")
            return
        norm = standardize.stats_of(snap.arrays, self.model.input_width) \
            if self.model.standardize else None
        self.champion = Judge.frozen(sid, {k: snap.arrays[k] for k in self.model.param_names},
                                     norm)
        self.candidate = None
        if self.last_snapshot_id and self.since_snapshot == 0 and self.last_snapshot_id != sid:
            self.candidate = Judge.frozen(self.last_snapshot_id, self.params, self.norm)
        self.changes.mark("j", new=not had)

    def _judge(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.champion is not None and self.candidate is not None:
            self.champion.score(self.model, x, y)
            self.candidate.score(self.model, x, y)
            self.changes.mark("j")

    def scores(self) -> dict:
        """Prequential scores since the start (state/prequential.py)."""
        return self.score_total.scores(self.model.prediction_kind)

    def _learn(self, x: np.ndarray, y: np.ndarray, sizes: list[int], start: int,
               ends: np.ndarray) -> np.ndarray:
        """Test then train consecutive micro-batches of `sizes` rows (inputs as `_inputs` made
        them; `ends` each row's window_end) in one TensorFlow call (the block path). Returns
        the predictions made before each batch's update."""
        job = TrainJob(self.params, self.slots, self.step, self.config.learning_rate, x, y,
                       sizes)
        result = learner_for(self.model).train([job])[0]
        self._apply_result(job, result, start, int(ends.max()))
        return result.predictions

    def _account(self, steps: int, rows: int, loss: float, start: int, end: int) -> None:
        """The bookkeeping of `steps` trained micro-batches of `rows` windows in all (streaming
        and block paths alike)."""
        self.step += steps
        self.counters["steps"] += steps
        self.counters["trained"] += rows
        self.last_loss = loss
        self.since_snapshot += rows
        if self.range_start is None:
            self.range_start = start
        self.range_end = max(self.range_end or 0, end)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {**self.params, **{"slot_" + k: v for k, v in self.slots.items()},
                **(self.norm or {})}

    def _cut_snapshot(self) -> Snapshot:
        self.changes.mark("m")
        self.version += 1
        sid = snapshot_id_for(self.tenant_id, self.version)
        manifest = {
            "snapshot_id": sid, "tenant_id": self.tenant_id, "trainer_id": self.trainer_id,
            "version": self.version, "mode": self.config.mode, "model": self.model.to_dict(),
            "window_start": self.range_start, "window_end": self.range_end,
            "created_at": self.range_end, "windows_trained": self.counters["trained"],
            "windows_in_snapshot": self.since_snapshot, "steps": self.step,
            "metrics": {"loss": self.last_loss,
                        "prequential": self.score_interval.scores(self.model.prediction_kind),
                        "prequential_total": self.scores()},
            "parent_snapshot_id": self.last_snapshot_id,
        }
        self.score_interval = Prequential()
        if self.champion is not None:
            kind = self.model.prediction_kind
            if self.candidate is not None and self.candidate.scores.n:
                manifest["metrics"]["challenge"] = challenge_record(self.candidate,
                                                                    self.champion, kind)
            self.candidate = Judge.frozen(sid, self.params, self.norm)
            self.champion.scores = Prequential()
            self.changes.mark("j")
        snap = Snapshot(manifest=manifest, arrays=self._arrays())
        self.last_snapshot_id = sid
        self.since_snapshot = 0
        self.range_start = None
        return snap

    # -- engine state ----------------------------------------------------------------------

    # Parts (state/parts.py): "m" the scalars, "w" the weights and optimizer slots,
    # "q/<seq>" a queued window, "a/<window_id>" a window awaiting its label, "e/<window_id>"
    # a label awaiting its window.

    def _meta(self) -> dict:
        return {
            "tenant_id": self.tenant_id, "trainer_id": self.trainer_id, "model": asdict(self.model),
            "config": asdict(self.config), **self._dynamic_meta()}

    def _dynamic_meta(self) -> dict:
        return {
            "step": self.step, "version": self.version,
            "last_snapshot_id": self.last_snapshot_id, "since_snapshot": self.since_snapshot,
            "range_start": self.range_start, "range_end": self.range_end,
            "last_loss": None if self.last_loss != self.last_loss else self.last_loss,  # NaN
            "paused": self.paused, "counters": self.counters,
            "ready_sizes": [len(b) for b in self.ready], "queue_start": self.queue_start,
            "arrivals": self.arrivals, "score_total": self.score_total.to_list(),
            "score_interval": self.score_interval.to_list(),
            "judges": {name: j.to_doc() for name, j in self._judges().items()},
        }

    def _judges(self) -> dict[str, Judge]:
        return {k: j for k, j in (("champion", self.champion), ("candidate", self.candidate))
                if j is not None}

    def _judge_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name, j in self._judges().items():
            out.update(j.arrays(name + "/"))
        return out

    def _queued(self) -> list[FeatureWindow]:
        return [w for b in self.ready for w in b] + self.batch

    def _queued_at(self, i: int) -> FeatureWindow:
        """`_queued()[i]` without building the list (a part is encoded per queued window; the
        one an event changes is nearly always among the newest, so look from the end)."""
        j = i - self.ready_rows
        if j >= 0:
            return self.batch[j]
        for b in reversed(self.ready):
            j += len(b)
            if j >= 0:
                return b[j]
        raise IndexError(i)

    def encode_part(self, key: str) -> bytes:
        if key == "m":  # (the part that never changes, pickled once; the rest)
            if self._static_meta is None:
                self._static_meta = pickle.dumps({
                    "tenant_id": self.tenant_id, "trainer_id": self.trainer_id,
                    "model": _as_dict(self.model), "config": _as_dict(self.config)}, 5)
            return pickle.dumps((self._static_meta, self._dynamic_meta()), 5)
        # The arrays packed (state/packed.py): hashed inputs leave them almost all zero
        if key == "w":
            return _packed_part(self._arrays())
        if key == "j":
            return _packed_part(self._judge_arrays())
        kind, ident = key[0], key[2:]
        if kind == "q":
            return self._queued_at(int(ident) - self.queue_start).to_state()
        if kind == "a":
            return pickle.dumps((self._seq[key], self.awaiting[ident].to_state()), 5)
        return pickle.dumps((self._seq[key], self.early_labels[ident]), 5)

    def drain_changes(self, prefix: str = "") -> tuple[dict[str, bytes], list[str]]:
        return self.changes.drain(self.encode_part, prefix)

    def parts(self) -> dict[str, bytes]:
        keys = (["m", "w"] + (["j"] if self.champion else [])
                + [f"q/{self.queue_start + i}" for i in range(len(self._queued()))]
                + list(self._seq))
        return {k: self.encode_part(k) for k in keys}

    @classmethod
    def from_parts(cls, parts: dict[str, bytes], config: TrainerConfig | None = None
                   ) -> "TrainerState":
        """The trainer from its parts; with `config`, that (the current per-tenant) trainer
        config instead of the one it was saved with. The model config is always the saved
        one: the weights have its shapes."""
        meta = pickle.loads(parts["m"])
        if isinstance(meta, tuple):
            static, dynamic = meta
            meta = {**pickle.loads(static), **dynamic}
        queued = sorted((int(k[2:]), v) for k, v in parts.items() if k[:2] == "q/")
        meta["queued"] = [FeatureWindow.from_state(v) for _, v in queued]
        awaiting, early = [], []
        for k, v in parts.items():
            if k[:2] == "a/":
                seq, blob = pickle.loads(v)
                awaiting.append((seq, FeatureWindow.from_state(blob)))
            elif k[:2] == "e/":
                seq, label = pickle.loads(v)
                early.append((seq, k[2:], label))
        meta["awaiting"] = [(seq, w.window_id, w) for seq, w in sorted(awaiting)]
        meta["early_labels"] = sorted(early)
        judges = _part_arrays(parts["j"]) if "j" in parts else {}
        return cls._from_meta(meta, _part_arrays(parts["w"]), judges, config)

    def to_bytes(self) -> bytes:
        meta = dict(self._meta(), queued=[w.to_dict() for w in self._queued()],
                    awaiting=[[self._seq["a/" + i], w.to_dict()] for i, w in self.awaiting.items()],
                    early_labels=[[self._seq["e/" + i], i, v] for i, v in self.early_labels.items()])
        arrays = {**self._arrays(), **{"judge:" + k: v for k, v in self._judge_arrays().items()}}
        return encode(Snapshot(manifest={"trainer_state": meta}, arrays=arrays), "none").data

    @classmethod
    def from_bytes(cls, blob: bytes, config: TrainerConfig | None = None) -> "TrainerState":
        """As `from_parts`, from `to_bytes`."""
        snap = decode(blob, None)
        meta = dict(snap.manifest["trainer_state"])
        meta["queued"] = [FeatureWindow.from_dict(d) for d in meta["queued"]]
        meta["awaiting"] = [(seq, d["window_id"], FeatureWindow.from_dict(d))
                            for seq, d in meta["awaiting"]]
        judges = {k[len("judge:"):]: v for k, v in snap.arrays.items() if k.startswith("judge:")}
        return cls._from_meta(meta, snap.arrays, judges, config)

    @classmethod
    def _from_meta(cls, meta: dict, arrays: dict, judges: dict | None = None,
                   config: TrainerConfig | None = None) -> "TrainerState":
        ts = cls(meta["tenant_id"], ModelConfig.from_dict(meta["model"]),
                 config or TrainerConfig(**meta["config"]), meta["trainer_id"])
        ts.params = {k: arrays[k] for k in ts.model.param_names}
        ts.slots = slots_or_init(ts.model, ts.params, _slots_in(arrays), ts.config.learning_rate)
        if ts.model.standardize:
            ts.norm = standardize.stats_of(arrays, ts.model.input_width)
        for k in ("step", "version", "last_snapshot_id", "since_snapshot", "range_start",
                  "range_end", "paused", "queue_start", "arrivals"):
            setattr(ts, k, meta[k])
        ts.last_loss = float("nan") if meta["last_loss"] is None else meta["last_loss"]
        ts.score_total = Prequential.from_list(meta.get("score_total"))  # absent: earlier code
        ts.score_interval = Prequential.from_list(meta.get("score_interval"))
        for name, doc in (meta.get("judges") or {}).items():
            setattr(ts, name, Judge.from_arrays(ts.model, name + "/", judges or {}, doc))
        ts.counters.update(meta["counters"])
        ts.changes = Changes()  # what was read is what the engine holds
        queued = meta["queued"]
        for size in meta["ready_sizes"]:
            ts.ready.append(queued[:size])
            ts.ready_rows += size
            queued = queued[size:]
        ts.batch = queued
        for seq, wid, w in meta["awaiting"]:
            ts.awaiting[wid] = w
            ts._seq["a/" + wid] = seq
        for seq, wid, label in meta["early_labels"]:
            ts.early_labels[wid] = label
            ts._seq["e/" + wid] = seq
        return ts

    def load_snapshot(self, snap: Snapshot) -> None:
        """Warm start from a snapshot: weights, optimizer slots and the version sequence (and
        the head `auto` chose, when this trainer's is still to be chosen)."""
        model = ModelConfig.from_dict(snap.manifest["model"])
        if self.model.resolved_as(model) and self.model != model:
            self.model = model
            self._static_meta = None
        self.params = {k: snap.arrays[k] for k in self.model.param_names}
        self.slots = slots_or_init(self.model, self.params, _slots_in(snap.arrays),
                                   self.config.learning_rate)
        if self.model.standardize:
            self.norm = standardize.stats_of(snap.arrays, self.model.input_width)
        self.changes.mark("w")
        self.changes.mark("m")
        self.version = int(snap.manifest["version"])
        self.last_snapshot_id = snap.manifest["snapshot_id"]
        self._drop_ahead()
        self.step = int(snap.manifest.get("steps", 0))


@lru_cache(maxsize=64)
def _fresh_arrays(model: ModelConfig, learning_rate: float) -> tuple[dict, dict, dict | None]:
    """A new trainer's params, slots and input statistics, made once per model config and
    rate (every new tenant copies them)."""
    params = init_params(model)
    norm = standardize.init_stats(model.input_width) if model.standardize else None
    return params, init_slots(model, params, learning_rate), norm


def _packed_part(arrays: dict[str, np.ndarray]) -> bytes:
    return pack({"a": arrays}).to_bytes()


def _part_arrays(part: bytes) -> dict[str, np.ndarray]:
    """The arrays of a "w" or "j" part: packed, or (parts saved before) a snapshot encoding."""
    if not Packed.is_packed(part):
        return decode(part, None).arrays
    return unpack(Packed.from_bytes(part), ("a",))["a"]


@lru_cache(maxsize=64)
def _as_dict(config) -> dict:
    """`asdict` of a frozen config, computed once per distinct config (every tenant of a job
    shares a few; only pickled, never changed)."""
    return asdict(config)
