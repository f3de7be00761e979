"""A mergeable quantile sketch with a relative-error guarantee (the DDSketch construction).

Values land in logarithmic buckets of ratio gamma = (1 + a) / (1 - a); a bucket's representative
is within relative error `a` of every value in it. Counts are exact, so the value at any rank is
known within `a`. `quantile` interpolates between the two ranks around q*(n-1) exactly as
`numpy.quantile(..., method="linear")` does; a convex combination of two values each within `a`
is itself within `a`, so the result is within `a` of numpy's. Merging two sketches adds counts.

Written here rather than taken from the `ddsketch` package because we need (a) numpy's
interpolation between ranks, which that package does not do, and (b) a compact, stable byte
form for engine state.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np

DEFAULT_RELATIVE_ACCURACY = 0.004
# Values below this are counted as zero. Drift scores live in [0, 1]; a p95 under 1e-9 is zero
# for every purpose here.
MIN_VALUE = 1e-9


class QuantileSketch:
    __slots__ = ("alpha", "_log_gamma", "zero", "buckets", "count", "total", "total_sq", "max")

    def __init__(self, alpha: float = DEFAULT_RELATIVE_ACCURACY):
        if not 0 < alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self._log_gamma = math.log((1 + alpha) / (1 - alpha))
        self.zero = 0
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0  # the sum of squares: the variance, exactly
        self.max = 0.0

    def add(self, value: float) -> None:
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"sketch values must be finite and >= 0, got {value!r}")
        self.count += 1
        self.total += value
        self.total_sq += value * value
        self.max = max(self.max, value)
        if value < MIN_VALUE:
            self.zero += 1
        else:
            k = math.ceil(math.log(value) / self._log_gamma)
            self.buckets[k] = self.buckets.get(k, 0) + 1

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(float(v))

    def merge(self, other: "QuantileSketch") -> None:
        if other.alpha != self.alpha:
            raise ValueError("cannot merge sketches of different accuracy")
        self.zero += other.zero
        for k, c in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + c
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.max = max(self.max, other.max)

    def _value(self, k: int) -> float:
        # The point of bucket (gamma^(k-1), gamma^k] with equal relative distance to both ends.
        gamma = math.exp(self._log_gamma)
        return 2.0 * gamma ** k / (gamma + 1.0)

    def _values_at_ranks(self, ranks: list[int]) -> list[float]:
        out = []
        keys = sorted(self.buckets)
        for r in ranks:
            if r < self.zero:
                out.append(0.0)
                continue
            seen = self.zero
            for k in keys:
                seen += self.buckets[k]
                if seen > r:
                    out.append(min(self._value(k), self.max))
                    break
        return out

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return float("nan")
        pos = q * (self.count - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, self.count - 1)
        a, b = self._values_at_ranks([lo, hi])
        return a + (pos - lo) * (b - a)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @property
    def variance(self) -> float:
        """The population variance (from the exact sum of squares)."""
        if not self.count:
            return float("nan")
        return max(0.0, self.total_sq / self.count - self.mean ** 2)

    # -- bytes: header, zero count, (bucket key, count) pairs as int32, then the sum of squares
    # (absent from sketches written before it: estimated from the buckets) ------------------

    _HEADER = struct.Struct("<dqqdd")

    def to_bytes(self) -> bytes:
        keys = np.fromiter(self.buckets.keys(), dtype=np.int32, count=len(self.buckets))
        counts = np.fromiter(self.buckets.values(), dtype=np.int64, count=len(self.buckets))
        return (self._HEADER.pack(self.alpha, self.zero, self.count, self.total, self.max)
                + struct.pack("<q", len(keys)) + keys.tobytes() + counts.tobytes()
                + struct.pack("<d", self.total_sq))

    @classmethod
    def from_bytes(cls, blob: bytes) -> "QuantileSketch":
        alpha, zero, count, total, mx = cls._HEADER.unpack_from(blob, 0)
        off = cls._HEADER.size
        (n,) = struct.unpack_from("<q", blob, off)
        off += 8
        keys = np.frombuffer(blob, dtype=np.int32, count=n, offset=off)
        counts = np.frombuffer(blob, dtype=np.int64, count=n, offset=off + 4 * n)
        s = cls(alpha)
        s.zero, s.count, s.total, s.max = zero, count, total, mx
        s.buckets = dict(zip(keys.tolist(), counts.tolist()))
        end = off + 12 * n
        if len(blob) >= end + 8:
            (s.total_sq,) = struct.unpack_from("<d", blob, end)
        else:
            s.total_sq = sum(c * min(s._value(k), mx) ** 2 for k, c in s.buckets.items())
        return s
