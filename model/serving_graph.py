"""A snapshot as one TensorFlow graph that takes the raw feature map: what `upm export` saves.

`ServingGraph(model, params, norm)` is a `tf.Module` whose `serve` function does everything the
Python Adapter does between a feature map and a prediction, inside the graph: each name hashed
to its slot and sign (model/graph_hashing.py, the same BLAKE2b as model/hashing.py), the values
summed into the hashed row, standardized by the snapshot's input statistics, run through the
model (model/network.forward_pass), and numeric predictions scaled back to target units. So
TF Serving, a Java or Go TensorFlow binding, or TensorFlow.js can serve it with no UPM code.

Inputs, a batch of feature maps as two aligned [batch, k] tensors (pad with the empty name):
  feature_names   string  [batch, k]  UTF-8 names; "" is padding and ignored
  feature_values  float64 [batch, k]
Outputs: `prediction` float32 [batch] (a probability for the logistic head, target units
otherwise) and `embedding` float32 [batch, embedding_dim].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from model import standardize
from model.graph_hashing import slots_and_signs
from model.network import ModelConfig, forward_pass

SIGNATURE = "serving_default"


class ServingGraph(tf.Module):
    def __init__(self, model: ModelConfig, params: dict[str, np.ndarray],
                 norm: dict[str, np.ndarray] | None):
        super().__init__(name="upm_serving")
        self.width = model.input_width
        self.head = model.head
        self.params = [tf.Variable(np.asarray(params[k], np.float32), trainable=False, name=k)
                       for k in model.param_names]
        mean, inv = _input_scale(norm, model.input_width)
        self.mean = tf.Variable(mean, trainable=False, name="input_mean")
        self.inv_std = tf.Variable(inv, trainable=False, name="input_inv_std")
        t_mean, t_std = (standardize.target_scale(norm)
                         if norm is not None and model.prediction_kind == "numeric" else (0.0, 1.0))
        self.target = tf.Variable([t_mean, t_std], dtype=tf.float64, trainable=False,
                                  name="target_mean_std")

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="feature_names"),
                                  tf.TensorSpec([None, None], tf.float64, name="feature_values")])
    def serve(self, feature_names, feature_values):
        rows = tf.shape(feature_names)[0]
        keep = tf.not_equal(feature_names, "")
        where = tf.where(keep)  # [m, 2]: row, position
        names = tf.gather_nd(feature_names, where)
        values = tf.gather_nd(feature_values, where)
        unique, index = tf.unique(names)
        slots, signs = slots_and_signs(unique, self.width)
        cells = tf.stack([where[:, 0], tf.gather(slots, index)], axis=1)
        x = tf.scatter_nd(cells, tf.gather(signs, index) * values,
                          tf.stack([tf.cast(rows, tf.int64), tf.constant(self.width, tf.int64)]))
        x = tf.cast((tf.cast(tf.cast(x, tf.float32), tf.float64) - self.mean) * self.inv_std,
                    tf.float32)
        pred, _, embedding = forward_pass(self.head, self.params, x)
        pred = tf.cast(tf.cast(pred, tf.float64) * self.target[1] + self.target[0], tf.float32)
        return {"prediction": pred, "embedding": embedding}


def _input_scale(norm: dict[str, np.ndarray] | None, width: int) -> tuple[np.ndarray, np.ndarray]:
    if norm is None:  # a model that does not standardize
        return np.zeros(width, np.float64), np.ones(width, np.float64)
    return standardize.input_scale(norm)

