"""The TensorFlow model: hashed features -> (optional hidden layer) -> a linear, logistic or MLP head.

The model is *functional*: its parameters and optimizer slots are plain numpy arrays owned by the
caller (a tenant's TrainerState), and `Learner` holds only compiled TensorFlow functions that
map arrays to arrays. So one Learner serves every tenant of an operator, engine state is plain
bytes (no pickled TensorFlow objects), and a tenant's model is reproducible from its bytes.

All TensorFlow work (import, tracing, every call) runs on one dedicated Python thread per
process (`tf_call`). Hosts that embed CPython and run it from their own threads, such as
PyFlink's thread mode (PEMJA), create thread states that pybind11's GIL handling does not
recognise: importing TensorFlow from such a thread deadlocks in `pybind11::get_internals`, and
calling it crashes the JVM. A thread started by Python's `threading` has a proper thread state;
the hand-off costs tens of microseconds per micro-batch.

Optimizers (`model.optimizer`), each with per-parameter slots of the parameter's shape:
- adam:    m, v        (Kingma & Ba; bias-corrected moments)
- adagrad: acc         (Duchi et al.; per-coordinate rate lr / sqrt(sum of squared gradients))
- ftrl:    z, n        (FTRL-Proximal, McMahan et al. 2013, with `ftrl_l1`/`ftrl_l2` on the
                        weights, never on biases; beta = 1). The weights follow from z and n;
                        `init_slots` sets z so that the given weights are where FTRL starts
                        (a random hidden layer, or a warm start from another optimizer).
Hashed inputs are sparse: a per-coordinate rate lets a rare feature learn as fast as a frequent one.

Shapes, in `param_names` order:
- linear / logistic: w [width, 1], b [1]                  embedding = the hashed input
- mlp:               w1 [width, hidden], b1 [hidden],      embedding = the hidden activations
                     w  [hidden, 1],     b  [1]
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from model.device import resolve_device

HEADS = ("linear", "logistic", "mlp")

_tf_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upm-tensorflow")
_tf_thread_ident: list[int] = []


def tf_call(fn, *args):
    """Run `fn(*args)` on the TensorFlow thread and return its result (re-raising its error)."""
    if _tf_thread_ident and threading.get_ident() == _tf_thread_ident[0]:
        return fn(*args)
    return _tf_executor.submit(_on_tf_thread, fn, args).result()


def _on_tf_thread(fn, args):
    if not _tf_thread_ident:
        _tf_thread_ident.append(threading.get_ident())
    return fn(*args)
STEPS = 64  # micro-batches per training call: every call has this shape (Learner.train)
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7
ADAGRAD_INIT = 0.1  # the accumulator's start (Keras' default): bounds the first steps
FTRL_BETA = 1.0
OPTIMIZERS = ("adam", "adagrad", "ftrl")
SLOTS = {"adam": ("m", "v"), "adagrad": ("acc",), "ftrl": ("z", "n")}


@dataclass(frozen=True)
class ModelConfig:
    input_width: int = 1024  # 64 dense features collide enough at 512 to cost a point (digits)
    head: str = "linear"
    hidden_units: int = 32
    seed: int = 0
    device: str = "auto"
    jit: str = "auto"  # XLA: auto = on for GPU, off for CPU (measured: per-call overhead wins on CPU)
    standardize: bool = True  # inputs standardized online (model/standardize.py)
    optimizer: str = "ftrl"  # chosen by measurement (bench/quality.py, README "Learning quality")
    ftrl_l1: float = 0.0
    ftrl_l2: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.head not in HEADS:
            raise ValueError(f"model.head must be one of {HEADS}, got {self.head!r}")
        if self.jit not in ("auto", "on", "off"):
            raise ValueError(f"model.jit must be auto, on or off, got {self.jit!r}")

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("w1", "b1", "w", "b") if self.head == "mlp" else ("w", "b")

    @property
    def prediction_kind(self) -> str:
        return "probability" if self.head == "logistic" else "numeric"

    @property
    def embedding_dim(self) -> int:
        return self.hidden_units if self.head == "mlp" else self.input_width

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
    if cfg.head == "mlp":
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

    if head == "mlp":
        h = tf.nn.relu(tf.matmul(x, params[0]) + params[1])
        z = tf.matmul(h, params[2]) + params[3]
    else:
        h = x
        z = tf.matmul(x, params[0]) + params[1]
    z = tf.squeeze(z, axis=1)
    return (tf.sigmoid(z) if head == "logistic" else z), z, h


class Learner:
    """Compiled predict and update steps for one ModelConfig; shared by all tenants."""

    def __init__(self, cfg: ModelConfig):
        import tensorflow as tf

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        jit = cfg.jit == "on" or (cfg.jit == "auto" and self.device.startswith("/GPU"))
        self.jit = jit
        # The training loop is compiled (XLA) unless jit is "off": measured here on the CPU, a
        # 64-step call is 4x faster compiled (one fused loop instead of ~30 kernel launches a
        # step); a single prediction is not (the per-call overhead wins).
        self.jit_train = cfg.jit != "off"
        names = cfg.param_names
        head = cfg.head

        def forward(params, x):
            return forward_pass(head, params, x)

        def loss_fn(params, x, y, mask, n):
            # the mean over the batch's `n` real rows; padded rows (mask 0) add exact zeros
            pred, z, _ = forward(params, x)
            if head == "logistic":
                per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z)
            else:
                per_row = tf.square(pred - y)
            return tf.reduce_sum(per_row * mask) / n, pred

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

        def update(params, slots, step, x, y, mask, n, lr):
            # slots: n_slots arrays per parameter, in param_names order
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss, pred = loss_fn(params, x, y, mask, n)
            grads = tape.gradient(loss, params)
            t = tf.cast(step + 1, tf.float32)
            new_p, new_s = [], []
            for i, (p, g) in enumerate(zip(params, grads)):
                q, s_i = apply(p, slots[i * n_slots:(i + 1) * n_slots], g, t, lr, penalties[i])
                new_p.append(q)
                new_s += s_i
            return new_p, new_s, loss, pred

        def train(params, slots, step, xs, ys, rows, k, lr):
            # The first k of xs [STEPS, batch, width] as micro-batches of rows[i] real rows each,
            # one optimizer step each, looped in the graph. Every call has the same shapes, so
            # every step runs the same compiled code whatever the call's k: the weights do not
            # depend on how the steps were grouped into calls.
            batch = tf.shape(xs)[1]
            losses = tf.zeros([STEPS], tf.float32)
            preds = tf.zeros(tf.shape(ys), tf.float32)
            i = tf.constant(0)
            while i < k:  # a while loop on a tensor (not tf.range: XLA would compile per k)
                n = rows[i]
                mask = tf.cast(tf.range(batch) < n, tf.float32)
                params, slots, loss, pred = update(params, slots, step + tf.cast(i, tf.int64),
                                                   xs[i], ys[i], mask, tf.cast(n, tf.float32),
                                                   lr)
                losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
                preds = tf.tensor_scatter_nd_update(preds, [[i]], [pred])
                i += 1
            return params, slots, losses, preds

        def predict(params, x):
            pred, _, h = forward(params, x)
            return pred, h

        shapes = [tf.TensorSpec(p.shape, tf.float32) for p in init_params(cfg).values()]
        slot_shapes = [s for s in shapes for _ in range(n_slots)]
        x_spec = tf.TensorSpec([None, cfg.input_width], tf.float32)
        self._train = tf.function(train, jit_compile=self.jit_train, input_signature=[
            shapes, slot_shapes, tf.TensorSpec([], tf.int64),
            tf.TensorSpec([STEPS, None, cfg.input_width], tf.float32),
            tf.TensorSpec([STEPS, None], tf.float32), tf.TensorSpec([STEPS], tf.int32),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)])
        self._predict = tf.function(predict, jit_compile=jit, input_signature=[shapes, x_spec])
        self._names = names
        self._slot_keys = [f"{sl}_{k}" for k in names for sl in SLOTS[optimizer]]
        self._tf = tf

    def train(self, params: dict, slots: dict, step: int, x: np.ndarray, y: np.ndarray,
              sizes: list[int], lr: float) -> tuple[dict, dict, np.ndarray, np.ndarray]:
        """Consecutive micro-batches of `sizes` rows (x [sum(sizes), width], y [sum(sizes)]),
        one optimizer step each, in calls of at most STEPS steps. Returns new params, new
        slots, each step's loss, and the predictions made *before* the step that trained each
        row (the shadow predictions of test-then-train). Bit for bit the same however the same
        micro-batches are split between calls."""
        batch = max(sizes)
        losses, preds = np.empty(len(sizes), np.float32), np.empty(len(y), np.float32)
        row = 0
        for first in range(0, len(sizes), STEPS):
            chunk = sizes[first:first + STEPS]
            xs = np.zeros((STEPS, batch, x.shape[1]), np.float32)
            ys = np.zeros((STEPS, batch), np.float32)
            at = row
            for i, n in enumerate(chunk):
                xs[i, :n], ys[i, :n] = x[at:at + n], y[at:at + n]
                at += n
            rows = np.zeros(STEPS, np.int32)
            rows[:len(chunk)] = chunk
            params, slots, loss, pred = tf_call(self._call_train, params, slots, step + first,
                                                xs, ys, rows, len(chunk), lr)
            losses[first:first + len(chunk)] = loss[:len(chunk)]
            for i, n in enumerate(chunk):
                preds[row:row + n] = pred[i, :n]
                row += n
        return params, slots, losses, preds

    def _call_train(self, params, slots, step, xs, ys, rows, k, lr):
        with self._tf.device(self.device):
            p, s, loss, pred = self._train(
                [params[k] for k in self._names], [slots[k] for k in self._slot_keys],
                np.int64(step), xs, ys, rows, np.int32(k), np.float32(lr))
        return ({k: t.numpy() for k, t in zip(self._names, p)},
                {k: t.numpy() for k, t in zip(self._slot_keys, s)}, loss.numpy(), pred.numpy())

    def predict(self, params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and embeddings (penultimate layer) for a batch of hashed inputs."""
        return tf_call(self._predict_now, params, x)

    def _predict_now(self, params, x):
        with self._tf.device(self.device):
            pred, emb = self._predict([params[k] for k in self._names], x)
        return pred.numpy(), emb.numpy()


_learners: dict[ModelConfig, Learner] = {}
_lock = threading.Lock()


def learner_for(cfg: ModelConfig) -> Learner:
    """The process-wide Learner of a config (tracing and compiling once per config)."""
    with _lock:
        lr = _learners.get(cfg)
        if lr is None:
            lr = _learners[cfg] = tf_call(Learner, cfg)
        return lr
