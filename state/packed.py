"""Packed: groups of named numpy arrays held compressed in memory, for a trainer's weights,
optimizer slots and input statistics while it is idle (`TrainerState.park`) or while a result
trained ahead waits for its turn (state/train_group.py). Hashed inputs leave these arrays
almost all zero: a linear tenant's ~37 KB pack into ~2 KB, in ~40 us (unpacking ~20 us)."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import zstandard

_LAYOUTS: dict[tuple, tuple] = {}  # one object per distinct layout (every tenant of a model)


@dataclass(frozen=True)
class Packed:
    layout: tuple  # (group, name, dtype, shape) per array, in the blob's order
    blob: bytes

    @property
    def nbytes(self) -> int:
        return len(self.blob)

    # As bytes (engine state parts): a pickle of the layout and the blob.
    def to_bytes(self) -> bytes:
        return pickle.dumps((self.layout, self.blob), 5)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Packed":
        return cls(*pickle.loads(data))

    @staticmethod
    def is_packed(data: bytes) -> bool:
        """Whether `data` is `to_bytes` output (a pickle), not another encoding (a zstd frame)."""
        return data[:1] == b"\x80"


def pack(groups: dict[str, dict[str, np.ndarray]]) -> Packed:
    arrays = [(g, k, np.ascontiguousarray(a)) for g, d in groups.items() for k, a in d.items()]
    layout = tuple((g, k, a.dtype.str, a.shape) for g, k, a in arrays)
    layout = _LAYOUTS.setdefault(layout, layout)
    blob = zstandard.compress(b"".join(a.tobytes() for _, _, a in arrays), 1)
    # (copied: the compressor's bytes keep the allocation of its upper bound)
    return Packed(layout, bytes(memoryview(blob)))


def unpack(packed: Packed, names: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """The groups `names` (each present, perhaps empty), arrays writable as they were."""
    data = bytearray(zstandard.decompress(packed.blob))
    groups: dict[str, dict[str, np.ndarray]] = {g: {} for g in names}
    for g, k, dt, shape, count, offset in _places(packed.layout):
        groups[g][k] = np.frombuffer(data, dt, count, offset).reshape(shape)
    return groups


@lru_cache(maxsize=256)
def _places(layout: tuple) -> tuple:
    """Where each array of a layout is in the blob: (group, name, dtype, shape, count, offset)."""
    out, offset = [], 0
    for g, k, dtype, shape in layout:
        dt = np.dtype(dtype)
        count = math.prod(shape)
        out.append((g, k, dt, shape, count, offset))
        offset += count * dt.itemsize
    return tuple(out)
