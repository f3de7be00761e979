"""The TensorFlow model: hashed features -> (optional hidden layer) -> a regression or classifier head.

The model is *functional*: its parameters and optimizer slots are plain numpy arrays owned by the
caller (a tenant's TrainerState), and `Learner` holds only compiled TensorFlow functions that
map arrays to arrays. So one Learner serves every tenant of an operator, engine state is plain
bytes (no pickled TensorFlow objects), and a tenant's model is reproducible from its bytes.

All TensorFlow work (import, tracing, every call) runs on one dedicated Python thread per
process (model/tf_thread.py).

Optimizers (`model.optimizer`), each with per-parameter slots of the parameter's shape:
- adam:    m, v        (Kingma & Ba; bias-corrected moments)
- adagrad: acc         (Duchi et al.; per-coordinate rate lr / sqrt(sum of squared gradients))
- ftrl:    z, n        (FTRL-Proximal, McMahan et al. 2013, with `ftrl_l1`/`ftrl_l2` on the
                        weights, never on biases; beta = 1). The weights follow from z and n;
                        `init_slots` sets z so that the given weights are where FTRL starts
                        (a random hidden layer, or a warm start from another optimizer).
Hashed inputs are sparse: a per-coordinate rate lets a rare feature learn as fast as a frequent one.

Heads (`model.head`): a regressor (squared loss, the prediction is the output) or a classifier
(log loss, the prediction is the sigmoid's probability of label 1), with or without a hidden
layer:
- linear:   regressor        logistic:     classifier      (no hidden layer)
- mlp:      regressor        mlp_logistic: classifier      (one ReLU layer of `hidden_units`)
- auto:     per tenant, logistic when its first labelled micro-batch holds only labels 0 and 1,
            else linear (`resolve`); a tenant's trainer holds the resolved config.

Shapes, in `param_names` order:
- linear / logistic:    w [width, 1], b [1]               embedding = the hashed input
- mlp / mlp_logistic:   w1 [width, hidden], b1 [hidden],  embedding = the hidden activations
                        w  [hidden, 1],     b  [1]
"""

from __future__ import annotations

import gc
import threading
from dataclasses import asdict, dataclass, replace

import numpy as np

from model.device import resolve_device
from model.tf_thread import tf_call

HEADS = ("auto", "linear", "logistic", "mlp", "mlp_logistic")
CLASSIFIERS = ("logistic", "mlp_logistic")
HIDDEN = ("mlp", "mlp_logistic")  # the heads with a hidden layer

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7
ADAGRAD_INIT = 0.1  # the accumulator's start (Keras' default): bounds the first steps
FTRL_BETA = 1.0
OPTIMIZERS = ("adam", "adagrad", "ftrl")
SLOTS = {"adam": ("m", "v"), "adagrad": ("acc",), "ftrl": ("z", "n")}


@dataclass(frozen=True)
class ModelConfig:
    input_width: int = 1024  # 64 dense features collide enough at 512 to cost a point (digits)
    head: str = "auto"
    hidden_units: int = 32
    seed: int = 0
    device: str = "auto"
    jit: str = "auto"  # XLA: auto = on for GPU, off for CPU (see Learner)
    standardize: bool = True  # inputs standardized online (model/standardize.py)
    optimizer: str = "ftrl"  # chosen by measurement (bench/quality.py, README "Learning quality")
    ftrl_l1: float = 0.0
    ftrl_l2: float = 0.0
    auto_head: bool = False  # `head` was chosen by head = auto (set by `resolve`, not by users)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.head not in HEADS:
            raise ValueError(f"model.head must be one of {HEADS}, got {self.head!r}")
        if self.jit not in ("auto", "on", "off"):
            raise ValueError(f"model.jit must be auto, on or off, got {self.jit!r}")

    @property
    def hidden(self) -> bool:
        return self.head in HIDDEN

    @property
    def classifier(self) -> bool:
        return self.head in CLASSIFIERS

    @property
    def resolved(self) -> bool:
        return self.head != "auto"

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("w1", "b1", "w", "b") if self.hidden else ("w", "b")

    @property
    def prediction_kind(self) -> str:
        return "probability" if self.classifier else "numeric"

    @property
    def embedding_dim(self) -> int:
        return self.hidden_units if self.hidden else self.input_width

    def resolve(self, labels) -> "ModelConfig":
        """The config a tenant trains with, given its first labelled micro-batch's labels: an
        explicit head as it is; `auto` a classifier (logistic) when every label is 0 or 1, else
        a regressor (linear)."""
        if self.resolved:
            return self
        binary = len(labels) > 0 and all(v == 0.0 or v == 1.0 for v in labels)
        return replace(self, head="logistic" if binary else "linear", auto_head=True)

    def resolved_as(self, other: "ModelConfig") -> bool:
        """Whether `other` (a snapshot's model) is this config resolved, so a tenant of this
        config may warm-start from it and keep its head."""
        return other == self or (not self.resolved and other.auto_head
                                 and replace(other, head="auto", auto_head=False) == self)

    @property
    def binary_labels_only(self) -> bool:
        """A classifier that `auto` chose takes labels 0 and 1 only; an explicit head takes any
        number, as before `auto` existed."""
        return self.auto_head and self.classifier

    def refusal(self, label: float) -> str | None:
        """Why this head cannot learn `label` (None: it can)."""
        if self.binary_labels_only and label != 0.0 and label != 1.0:
            return (f"bad_label: label {label!r} is not 0 or 1, and model.head auto chose "
                    f"{self.head} for this tenant from its first labels (a numeric target "
                    f"whose first labels were all 0 or 1 needs model.head = \"linear\")")
        return None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """A manifest's or engine state's model; written before `optimizer` existed means Adam."""
        return cls(**{"optimizer": "adam", **d})


def init_params(cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Deterministic initial parameters (Glorot-uniform hidden layer, zero head)."""
    rng = np.random.default_rng(cfg.seed)
    params: dict[str, np.ndarray] = {}
    fan_in = cfg.input_width
    if cfg.hidden:
        limit = np.sqrt(6.0 / (cfg.input_width + cfg.hidden_units))
        params["w1"] = rng.uniform(-limit, limit, (cfg.input_width, cfg.hidden_units)).astype(np.float32)
        params["b1"] = np.zeros((cfg.hidden_units,), np.float32)
        fan_in = cfg.hidden_units
    params["w"] = np.zeros((fan_in, 1), np.float32)
    params["b"] = np.zeros((1,), np.float32)
    return params


def init_slots(cfg: ModelConfig, params: dict[str, np.ndarray],
               learning_rate: float) -> dict[str, np.ndarray]:
    """Fresh optimizer slots for `params` (FTRL's z set so that its first weights are `params`)."""
    slots = {}
    for name, p in params.items():
        if cfg.optimizer == "adam":
            slots["m_" + name], slots["v_" + name] = np.zeros_like(p), np.zeros_like(p)
        elif cfg.optimizer == "adagrad":
            slots["acc_" + name] = np.full_like(p, ADAGRAD_INIT)
        else:
            l1, l2 = _ftrl_penalty(cfg, name)
            z = -p * (FTRL_BETA / learning_rate + l2) - np.sign(p) * l1
            slots["z_" + name], slots["n_" + name] = z.astype(np.float32), np.zeros_like(p)
    return slots


def slots_or_init(cfg: ModelConfig, params: dict[str, np.ndarray], found: dict[str, np.ndarray],
                  learning_rate: float) -> dict[str, np.ndarray]:
    """`found` slots if they are this optimizer's, else fresh ones (a snapshot of another
    optimizer warm-starts the weights, not the slots)."""
    want = {f"{s}_{name}" for s in SLOTS[cfg.optimizer] for name in params}
    return found if set(found) == want else init_slots(cfg, params, learning_rate)


def _ftrl_penalty(cfg: ModelConfig, name: str) -> tuple[float, float]:
    return (0.0, 0.0) if name.startswith("b") else (cfg.ftrl_l1, cfg.ftrl_l2)


def forward_pass(head: str, params: list, x):
    """(prediction, logit, embedding) of standardized rows x: the model, in TensorFlow ops, as
    the trainer steps it and an exported graph serves it. `params` in `param_names` order."""
    import tensorflow as tf

    if head in HIDDEN:
        h = tf.nn.relu(tf.matmul(x, params[0]) + params[1])
        z = tf.matmul(h, params[2]) + params[3]
    else:
        h = x
        z = tf.matmul(x, params[0]) + params[1]
    z = tf.squeeze(z, axis=1)
    return (tf.sigmoid(z) if head in CLASSIFIERS else z), z, h


@dataclass
class TrainJob:
    """One tenant's micro-batches to test then train: `sizes` of them, one after another, made
    of the rows of x (standardized hashed inputs) and y (targets), from its params, optimizer
    slots and step count, at its learning rate."""
    params: dict
    slots: dict
    step: int
    learning_rate: float
    x: np.ndarray
    y: np.ndarray
    sizes: list[int]


@dataclass
class TrainResult:
    """A TrainJob's new params and slots, each micro-batch's loss, and each row's prediction made
    before the step that learned from it (the shadow prediction of test-then-train)."""
    params: dict
    slots: dict
    losses: np.ndarray
    predictions: np.ndarray


class Learner:
    """Compiled predict and update steps for one ModelConfig; shared by all tenants."""

    def __init__(self, cfg: ModelConfig):
        import tensorflow as tf

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        # With jit, training compiles its whole loop with XLA (_train_padded): measured on CPU,
        # 12 us a step against 46-120 us for the same loop run op by op. It is not the CPU's
        # default because XLA's results differ in the last bits between TensorFlow versions
        # (2.20 and 2.21, the two runtimes' pins: up to 4e-6 in a weight after 1,500 windows),
        # and the engines must agree bit for bit; the ops run one by one agree.
        jit = cfg.jit == "on" or (cfg.jit == "auto" and self.device.startswith("/GPU"))
        self.jit = jit
        names = cfg.param_names
        head = cfg.head

        def forward(params, x):
            return forward_pass(head, params, x)

        def loss_fn(params, x, y, mask=None):
            # mask (XLA's padded steps): 1 for a real row, 0 for padding; the mean over real rows
            pred, z, _ = forward(params, x)
            if head in CLASSIFIERS:
                per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
            else:
                per_row = tf.square(pred - y)
            if mask is None:
                return tf.reduce_mean(per_row), pred
            return tf.reduce_sum(per_row * mask) / tf.reduce_sum(mask), pred

        optimizer, n_slots = cfg.optimizer, len(SLOTS[cfg.optimizer])
        penalties = [_ftrl_penalty(cfg, name) for name in names]

        def apply(p, slots, g, t, lr, penalty):
            if optimizer == "adam":
                m, v = slots
                m = ADAM_B1 * m + (1.0 - ADAM_B1) * g
                v = ADAM_B2 * v + (1.0 - ADAM_B2) * tf.square(g)
                m_hat = m / (1.0 - tf.pow(ADAM_B1, t))
                v_hat = v / (1.0 - tf.pow(ADAM_B2, t))
                return p - lr * m_hat / (tf.sqrt(v_hat) + ADAM_EPS), [m, v]
            if optimizer == "adagrad":
                (acc,) = slots
                acc = acc + tf.square(g)
                return p - lr * g / tf.sqrt(acc), [acc]
            z, n = slots
            l1, l2 = penalty
            n_new = n + tf.square(g)
            z = z + g - (tf.sqrt(n_new) - tf.sqrt(n)) / lr * p
            shrunk = z - tf.sign(z) * l1
            w = tf.where(tf.abs(z) <= l1, tf.zeros_like(z),
                         -shrunk / ((FTRL_BETA + tf.sqrt(n_new)) / lr + l2))
            return w, [z, n_new]

        def update(params, slots, step, x, y, lr, mask=None):
            # slots: n_slots arrays per parameter, in param_names order
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss, pred = loss_fn(params, x, y, mask)
            grads = tape.gradient(loss, params)
            t = tf.cast(step + 1, tf.float32)
            new_p, new_s = [], []
            for i, (p, g) in enumerate(zip(params, grads)):
                q, s_i = apply(p, slots[i * n_slots:(i + 1) * n_slots], g, t, lr, penalties[i])
                new_p.append(q)
                new_s += s_i
            return new_p, new_s, loss, pred

        def train_group(params, slots, steps, lrs, counts, sizes, x, y):
            # For each tenant t in turn: its `counts[t]` steps, each on the next `sizes[s]` rows
            # of x, y, starting from its own row of the stacked params and slots. A tenant's
            # steps run the ops `update` is, on the shapes it alone would give them, so what it
            # gets does not depend on which tenants share the call.
            n_t = tf.shape(counts)[0]
            out_p = [tf.TensorArray(tf.float32, size=n_t, element_shape=p.shape[1:])
                     for p in params]
            out_s = [tf.TensorArray(tf.float32, size=n_t, element_shape=v.shape[1:])
                     for v in slots]
            losses = tf.TensorArray(tf.float32, size=tf.shape(sizes)[0])
            preds = tf.TensorArray(tf.float32, size=tf.shape(sizes)[0], element_shape=[None],
                                   infer_shape=False)
            s = tf.constant(0)
            row = tf.constant(0)
            for t in tf.range(n_t):
                p_t = [p[t] for p in params]
                s_t = [v[t] for v in slots]
                for i in tf.range(counts[t]):
                    n = sizes[s]
                    p_t, s_t, loss, pred = update(p_t, s_t, steps[t] + tf.cast(i, tf.int64),
                                                   x[row:row + n], y[row:row + n], lrs[t])
                    losses = losses.write(s, loss)
                    preds = preds.write(s, pred)
                    s += 1
                    row += n
                out_p = [ta.write(t, v) for ta, v in zip(out_p, p_t)]
                out_s = [ta.write(t, v) for ta, v in zip(out_s, s_t)]
            return ([ta.stack() for ta in out_p], [ta.stack() for ta in out_s], losses.stack(),
                    preds.concat())

        def train_one(params, slots, step, lr, sizes, x, y):
            # train_group for one tenant, without its bookkeeping of several (a tenant that
            # trains alone costs less; its arithmetic is the same)
            n_steps = tf.shape(sizes)[0]
            losses = tf.TensorArray(tf.float32, size=n_steps)
            preds = tf.TensorArray(tf.float32, size=n_steps, element_shape=[None],
                                   infer_shape=False)
            row = tf.constant(0)
            for s in tf.range(n_steps):
                n = sizes[s]
                params, slots, loss, pred = update(params, slots, step + tf.cast(s, tf.int64),
                                                    x[row:row + n], y[row:row + n], lr)
                losses = losses.write(s, loss)
                preds = preds.write(s, pred)
                row += n
            return params, slots, losses.stack(), preds.concat()

        def padded_group(params, slots, steps, lrs, counts, n_tenants, x, y, mask):
            # train_group with static shapes, for XLA: step s is x[s] [batch, width], its real
            # rows marked by mask[s], padding rows zero (they add exact zeros to the gradient);
            # the stacked tenants and steps are padded too, and only the first n_tenants run.
            # Every step has one shape, so a tenant's arithmetic is the same in any group.
            out_p, out_s = list(params), list(slots)
            losses = tf.zeros(tf.shape(mask)[:1])
            preds = tf.zeros(tf.shape(mask))
            s = tf.constant(0)
            t = tf.constant(0)
            while t < n_tenants:  # (while, not range: XLA takes no range of a runtime length)
                p_t = [p[t] for p in params]
                s_t = [v[t] for v in slots]
                i = tf.constant(0)
                while i < counts[t]:
                    p_t, s_t, loss, pred = update(p_t, s_t, steps[t] + tf.cast(i, tf.int64),
                                                  x[s], y[s], lrs[t], mask[s])
                    losses = tf.tensor_scatter_nd_update(losses, [[s]], [loss])
                    preds = tf.tensor_scatter_nd_update(preds, [[s]], [pred])
                    s += 1
                    i += 1
                out_p = [tf.tensor_scatter_nd_update(o, [[t]], [v]) for o, v in zip(out_p, p_t)]
                out_s = [tf.tensor_scatter_nd_update(o, [[t]], [v]) for o, v in zip(out_s, s_t)]
                t += 1
            return out_p, out_s, losses, preds

        def predict(params, x):
            pred, _, h = forward(params, x)
            return pred, h

        shapes = [tf.TensorSpec(p.shape, tf.float32) for p in init_params(cfg).values()]
        slot_shapes = [s for s in shapes for _ in range(n_slots)]
        x_spec = tf.TensorSpec([None, cfg.input_width], tf.float32)
        y_spec = tf.TensorSpec([None], tf.float32)
        # Concrete functions, traced once here: calling one skips tf.function's matching of the
        # arguments against its signature, which cost more than the step itself (measured: a
        # one-batch update 750 us as a tf.function, 390 us as its concrete function; the op
        # execution is ~130 us). The graph, and so every result, is the same.
        stacked = [tf.TensorSpec([None, *p.shape], tf.float32) for p in shapes]
        stacked_slots = [tf.TensorSpec([None, *p.shape], tf.float32) for p in slot_shapes]
        if jit:  # one XLA program per (tenants, steps, batch) bucket, compiled on first use
            self._padded_group = tf.function(padded_group, jit_compile=True, input_signature=[
                stacked, stacked_slots, tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.int32), tf.TensorSpec([None, None, cfg.input_width]),
                tf.TensorSpec([None, None]), tf.TensorSpec([None, None])]
            ).get_concrete_function()
        else:
            self._train_group = tf.function(train_group, input_signature=[
                stacked, stacked_slots, tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.int32), x_spec, y_spec]).get_concrete_function()
            self._train_one = tf.function(train_one, input_signature=[
                shapes, slot_shapes, tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.float32),
                tf.TensorSpec([None], tf.int32), x_spec, y_spec]).get_concrete_function()
        self._predict = tf.function(predict, jit_compile=jit, input_signature=[shapes, x_spec]
                                    ).get_concrete_function()
        self._names = names
        self._slot_keys = [f"{sl}_{k}" for k in names for sl in SLOTS[optimizer]]
        self._tf = tf

    def train(self, jobs: list[TrainJob]) -> list[TrainResult]:
        """Test then train each job's micro-batches (the tenants' own params, slots, step count
        and rate) in one TensorFlow call; results in the jobs' order. Each job's result is the
        one it gets alone: the same ops on the same shapes, whichever jobs share the call."""
        return tf_call(self._train_padded if self.jit else self._train_now, jobs)

    def _train_padded(self, jobs: list[TrainJob]) -> list[TrainResult]:
        # Jobs whose micro-batches pad to one batch size run together; the step's shape is what
        # makes a tenant's arithmetic, so a job never pads to another job's batch size.
        by_batch: dict[int, list[int]] = {}
        for i, j in enumerate(jobs):
            by_batch.setdefault(_bucket(max(j.sizes)), []).append(i)
        out: list[TrainResult | None] = [None] * len(jobs)
        for batch, idx in by_batch.items():
            for i, r in zip(idx, self._train_bucket([jobs[i] for i in idx], batch)):
                out[i] = r
        return out

    def _train_bucket(self, jobs: list[TrainJob], batch: int) -> list[TrainResult]:
        names, slot_keys, width = self._names, self._slot_keys, self.cfg.input_width
        n_t, tenants = len(jobs), _bucket(len(jobs))

        def padded(values: list, dtype) -> np.ndarray:  # one row per job, then zero rows
            a = np.zeros((tenants, *np.shape(values[0])), dtype)
            a[:n_t] = values
            return a

        sizes = np.concatenate([np.asarray(j.sizes, np.int64) for j in jobs])
        steps = _bucket(len(sizes))
        step_of_row = np.repeat(np.arange(len(sizes)), sizes)
        slot_of_row = np.arange(len(step_of_row)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        x = np.zeros((steps, batch, width), np.float32)
        y = np.zeros((steps, batch), np.float32)
        mask = np.zeros((steps, batch), np.float32)
        x[step_of_row, slot_of_row] = np.concatenate([np.asarray(j.x, np.float32) for j in jobs])
        y[step_of_row, slot_of_row] = np.concatenate([np.asarray(j.y, np.float32) for j in jobs])
        mask[step_of_row, slot_of_row] = 1.0
        with self._tf.device(self.device):
            p, s, losses, preds = self._padded_group(
                [padded([j.params[k] for j in jobs], np.float32) for k in names],
                [padded([j.slots[k] for j in jobs], np.float32) for k in slot_keys],
                padded([j.step for j in jobs], np.int64),
                padded([j.learning_rate for j in jobs], np.float32),
                padded([len(j.sizes) for j in jobs], np.int32), np.int32(n_t), x, y, mask)
        return self._results(jobs, p, s, losses.numpy(),
                             preds.numpy()[step_of_row, slot_of_row])

    def _train_now(self, jobs: list[TrainJob]) -> list[TrainResult]:
        names, slot_keys = self._names, self._slot_keys
        if len(jobs) == 1:
            return [self._train_alone(jobs[0])]
        with self._tf.device(self.device):
            p, s, losses, preds = self._train_group(
                [np.stack([j.params[k] for j in jobs]) for k in names],
                [np.stack([j.slots[k] for j in jobs]) for k in slot_keys],
                np.array([j.step for j in jobs], np.int64),
                np.array([j.learning_rate for j in jobs], np.float32),
                np.array([len(j.sizes) for j in jobs], np.int32),
                np.concatenate([np.asarray(j.sizes, np.int32) for j in jobs]),
                np.concatenate([np.asarray(j.x, np.float32) for j in jobs]),
                np.concatenate([np.asarray(j.y, np.float32) for j in jobs]))
        return self._results(jobs, p, s, losses.numpy(), preds.numpy())

    def _results(self, jobs: list[TrainJob], p, s, losses: np.ndarray,
                 preds: np.ndarray) -> list[TrainResult]:
        """Each job's TrainResult from a group call's stacked params and slots (row t: job t)
        and its losses and predictions, concatenated in job order."""
        p = [a.numpy() for a in p]
        s = [a.numpy() for a in s]
        out, step, row = [], 0, 0
        for t, j in enumerate(jobs):
            steps, rows = len(j.sizes), int(np.sum(j.sizes))
            # (copies: a view would keep every tenant's stacked arrays alive)
            out.append(TrainResult({k: a[t].copy() for k, a in zip(self._names, p)},
                                   {k: a[t].copy() for k, a in zip(self._slot_keys, s)},
                                   losses[step:step + steps], preds[row:row + rows]))
            step, row = step + steps, row + rows
        return out

    def _train_alone(self, j: TrainJob) -> TrainResult:
        with self._tf.device(self.device):
            p, s, losses, preds = self._train_one(
                [j.params[k] for k in self._names], [j.slots[k] for k in self._slot_keys],
                np.int64(j.step), np.float32(j.learning_rate), np.asarray(j.sizes, np.int32),
                np.asarray(j.x, np.float32), np.asarray(j.y, np.float32))
        return TrainResult({k: a.numpy() for k, a in zip(self._names, p)},
                           {k: a.numpy() for k, a in zip(self._slot_keys, s)},
                           losses.numpy(), preds.numpy())

    def predict(self, params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and embeddings (penultimate layer) for a batch of hashed inputs."""
        return tf_call(self._predict_now, params, x)

    def _predict_now(self, params, x):
        with self._tf.device(self.device):
            pred, emb = self._predict([params[k] for k in self._names], x)
        return pred.numpy(), emb.numpy()


def _bucket(n: int) -> int:
    """The padded size of n: the next power of two (XLA compiles one program per shape)."""
    return 1 << max(0, int(n) - 1).bit_length()


_learners: dict[ModelConfig, Learner] = {}
_lock = threading.Lock()


def learner_for(cfg: ModelConfig) -> Learner:
    """The process-wide Learner of a config (tracing and compiling once per config)."""
    cfg = replace(cfg, auto_head=False)  # the same arithmetic however the head was chosen
    with _lock:
        lr = _learners.get(cfg)
        if lr is None:
            lr = _learners[cfg] = tf_call(_traced_learner, cfg)
        return lr


def _traced_learner(cfg: ModelConfig) -> Learner:
    """A Learner, built on the TensorFlow thread with the garbage its tracing leaves collected
    there too. Tracing leaves reference cycles that hold TensorFlow graphs; left to Python's
    collector, they are freed on whichever thread allocates next, and on an engine's thread
    (PEMJA's in a Flink TaskManager) a graph's destructor waits forever for pybind11's GIL
    handling (seen: a job hung in `StackTraceWrapper::~StackTraceWrapper`, py-spy --native)."""
    learner = Learner(cfg)
    gc.collect()
    return learner
