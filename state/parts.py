"""Changes: which parts of a core object changed since an engine last saved it. No I/O.

A core object that an engine keeps in keyed state is stored as named parts (a small `meta`
part, plus one part per held window, remembered id, sketch, ...) in the engine's map state, so
saving after an event writes what the event changed instead of re-serializing the whole object
(a tenant can hold a thousand windows and remember thousands of ids). The object marks keys as
it changes them; `drain(encode)` hands the engine the parts to put (encoded then, once, however
often a key changed) and the keys to remove.

Parts are pickles of builtin values only (dicts, lists, tuples, numbers, strings, bytes),
never of this code's classes, so any Python reads them. Measured here: 4-10x cheaper than
JSON for the parts written on every event (a window: 0.6 us vs 6 us).
"""

from __future__ import annotations

from collections.abc import Callable


class Changes:
    def __init__(self) -> None:
        self._put: set[str] = set()
        self._new: set[str] = set()  # put since the last drain and not in the engine's state
        self._gone: set[str] = set()

    def mark(self, key: str, new: bool = False) -> None:
        """`key` has a new value. `new`: it was not in the engine's state before."""
        if new and key not in self._gone:
            self._new.add(key)
        self._gone.discard(key)
        self._put.add(key)

    def drop(self, key: str) -> None:
        self._put.discard(key)
        if key in self._new:
            self._new.discard(key)  # never reached the engine: nothing to remove
        else:
            self._gone.add(key)

    def drain(self, encode: Callable[[str], bytes], prefix: str = ""
              ) -> tuple[dict[str, bytes], list[str]]:
        """The parts to put and the keys to remove, named `prefix + key`."""
        puts = {prefix + k: encode(k) for k in self._put}
        gone = [prefix + k for k in self._gone]
        self._put.clear()
        self._new.clear()
        self._gone.clear()
        return puts, gone
