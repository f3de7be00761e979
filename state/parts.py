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
    # Three sets per core object and three core objects per tenant: created when first needed
    # and dropped at each drain, so an idle tenant (most of them, with many) holds none.
    __slots__ = ("_put", "_new", "_gone")

    def __init__(self) -> None:
        self._put: set[str] | None = None
        self._new: set[str] | None = None  # put since the last drain, not in the engine's state
        self._gone: set[str] | None = None

    def mark(self, key: str, new: bool = False) -> None:
        """`key` has a new value. `new`: it was not in the engine's state before."""
        put = self._put
        if not new and put is not None and key in put:
            return  # (marked since the last drain: nothing to change; never in `gone` then)
        gone = self._gone
        if new and not (gone and key in gone):
            if self._new is None:
                self._new = set()
            self._new.add(key)
        if gone:
            gone.discard(key)
        if self._put is None:
            self._put = set()
        self._put.add(key)

    def drop(self, key: str) -> None:
        if self._put:
            self._put.discard(key)
        if self._new and key in self._new:
            self._new.discard(key)  # never reached the engine: nothing to remove
        else:
            if self._gone is None:
                self._gone = set()
            self._gone.add(key)

    def drain(self, encode: Callable[[str], bytes], prefix: str = ""
              ) -> tuple[dict[str, bytes], list[str]]:
        """The parts to put and the keys to remove, named `prefix + key`."""
        puts = {prefix + k: encode(k) for k in self._put} if self._put else {}
        gone = [prefix + k for k in self._gone] if self._gone else []
        self._put = self._new = self._gone = None
        return puts, gone
