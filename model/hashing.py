"""Feature hashing: a map of feature name -> number with any names becomes a dense vector.

Each name maps to a slot and a sign through a stable hash (BLAKE2b of the UTF-8 name, so the
mapping is the same in every process and Python version); signed hashing keeps collisions
unbiased. The name -> (slot, sign) mapping is memoised per hasher, bounded in size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np

_MAX_MEMO = 1 << 16


class FeatureHasher:
    def __init__(self, width: int):
        if width < 1:
            raise ValueError("input_width must be >= 1")
        self.width = width
        self._memo: dict[str, tuple[int, float]] = {}

    def slot(self, name: str) -> tuple[int, float]:
        hit = self._memo.get(name)
        if hit is not None:
            return hit
        h = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")
        hit = (h % self.width, 1.0 if (h >> 63) & 1 else -1.0)
        if len(self._memo) < _MAX_MEMO:
            self._memo[name] = hit
        return hit

    def transform(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Rows of name -> value as a dense float32 matrix: each value times its sign, rounded
        to float32, added into its slot in row order (colliding names add up)."""
        sizes = np.fromiter(map(len, rows), np.int64, len(rows))
        names = list(chain.from_iterable(rows))
        values = np.fromiter(chain.from_iterable(r.values() for r in rows), np.float64,
                             len(names))
        vocabulary = list(dict.fromkeys(names))
        index = dict(zip(vocabulary, range(len(vocabulary))))
        codes = np.fromiter(map(index.__getitem__, names), np.int64, len(names))
        return self.transform_coded(len(rows), np.repeat(np.arange(len(rows)), sizes), codes,
                                    vocabulary, values)

    def transform_coded(self, n_rows: int, row_of: np.ndarray, codes: np.ndarray,
                        vocabulary: Sequence[str], values: np.ndarray) -> np.ndarray:
        """`transform` for columnar rows (a backfill's Arrow batches): value k belongs to row
        `row_of[k]` and has the name `vocabulary[codes[k]]`. Only the distinct names are hashed
        in Python. Equal to `transform` bit for bit: each value is rounded to float32 and added
        in row order, as `transform` does."""
        slots = np.empty(len(vocabulary), np.int64)
        signs = np.empty(len(vocabulary), np.float64)
        for i, name in enumerate(vocabulary):
            slots[i], signs[i] = self.slot(name)
        x = np.zeros((n_rows, self.width), dtype=np.float32)
        np.add.at(x, (row_of, slots[codes]), (signs[codes] * values).astype(np.float32))
        return x
