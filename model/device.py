"""Choosing where TensorFlow runs: `auto` (a GPU if TensorFlow sees one, else the CPU), `cpu`, `gpu`."""

from __future__ import annotations


class DeviceError(RuntimeError):
    pass


def resolve_device(choice: str) -> str:
    """Return a TensorFlow device string for `choice`, or raise DeviceError with the reason.
    Call it on the TensorFlow thread (model.tf_thread.tf_call)."""
    import tensorflow as tf

    if choice not in ("auto", "cpu", "gpu"):
        raise DeviceError(f"model.device must be auto, cpu or gpu, got {choice!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if choice == "gpu" and not gpus:
        raise DeviceError("model.device = 'gpu' but TensorFlow sees no GPU on this machine "
                          "(tf.config.list_physical_devices('GPU') is empty); use 'auto' or 'cpu'")
    if choice == "cpu" or not gpus:
        return "/CPU:0"
    return "/GPU:0"
