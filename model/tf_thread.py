"""The TensorFlow thread: all TensorFlow work of a process (import, tracing, every call, and
freeing what it made) runs on one dedicated Python thread (`tf_call`).

Hosts that embed CPython and run it from their own threads, such as PyFlink's thread mode
(PEMJA), create thread states that pybind11's GIL handling does not recognise: importing
TensorFlow from such a thread deadlocks in `pybind11::get_internals`, calling it crashes the
JVM, and a TensorFlow graph freed there (by Python's cyclic collector) waits forever in its
destructor. A thread started by Python's `threading` has a proper thread state; the hand-off
costs tens of microseconds per micro-batch.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

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
        _keep_xla_programs()
        _limit_threads()
    return fn(*args)


def _keep_xla_programs() -> None:
    """XLA's compiled training programs are kept on disk (TensorFlow's persistent compilation
    cache, keyed by the program's fingerprint) in UPM_XLA_CACHE, default
    ~/.cache/upm-stream/xla/<TensorFlow version> (the two runtimes pin different versions): a
    new process (a TaskManager, a test) loads them instead of compiling each again (~0.3 s a
    program). Set before TensorFlow reads its flags; a TF_XLA_FLAGS that names a cache wins."""
    from importlib.metadata import PackageNotFoundError, version

    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "persistent_cache_directory" in flags:
        return
    path = os.environ.get("UPM_XLA_CACHE")
    if not path:
        try:
            tf_version = version("tensorflow")
        except PackageNotFoundError:  # another build of TensorFlow: no cache, not a shared one
            return
        path = os.path.join(os.path.expanduser("~"), ".cache", "upm-stream", "xla", tf_version)
    try:
        os.makedirs(path, exist_ok=True)
        _prune(path, XLA_CACHE_FILES)
    except OSError:  # no writable home: compile in every process, as without a cache
        return
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={path}".strip()


XLA_CACHE_FILES = 1000  # programs kept (~0.3 MB each); a changed model makes new ones


def _prune(path: str, keep: int) -> None:
    """The newest `keep` files of `path` stay; the rest are removed (another process may be
    pruning or reading too: a file already gone is fine, and a program removed is compiled again)."""
    entries = []
    for e in os.scandir(path):
        try:
            entries.append((e.stat().st_mtime, e.path))
        except OSError:
            continue
    for _, p in sorted(entries, reverse=True)[keep:]:
        try:
            os.remove(p)
        except OSError:
            pass


def _limit_threads() -> None:
    """TensorFlow's own thread pools, UPM_TF_THREADS threads each (default 1), set before its
    runtime starts. The model's ops are small and a step's ops depend on each other, so more
    threads only compete with the engine's: measured in a Flink TaskManager on 2 cores, a
    training call took half the time with one thread each (none gained in a plain process)."""
    import tensorflow as tf

    n = int(os.environ.get("UPM_TF_THREADS", "1"))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # the runtime already started (TensorFlow used before UPM's first call)
        pass
