"""Prequential scores: how good a tenant's model is, from the shadow predictions test-then-train
already makes (each by weights that had not seen its window). No I/O.

For probabilities (a logistic head): accuracy at 0.5, log loss, Brier score (mean squared
error) and MAE; for numbers: MAE and RMSE. Sums are added one window at a time in window order,
so the streaming path and the backfill's block path, which group windows differently, give
bit-identical scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPS = 1e-7  # log loss clips probabilities to [EPS, 1 - EPS]


@dataclass
class Prequential:
    n: int = 0
    correct: int = 0
    log_loss: float = 0.0
    abs_err: float = 0.0
    sq_err: float = 0.0

    def add(self, predictions, truths, kind: str) -> None:
        prob = kind == "probability"
        n, correct, ll, ae, se = self.n, self.correct, self.log_loss, self.abs_err, self.sq_err
        for p, y in zip(predictions, truths):
            p, y = float(p), float(y)
            e = p - y
            n += 1
            ae += abs(e)
            se += e * e
            if prob:
                correct += (p >= 0.5) == (y >= 0.5)
                q = min(max(p, EPS), 1.0 - EPS)
                ll -= y * math.log(q) + (1.0 - y) * math.log(1.0 - q)
        self.n, self.correct, self.log_loss, self.abs_err, self.sq_err = n, correct, ll, ae, se

    def scores(self, kind: str) -> dict:
        """The scores over what was added (None where a diverged model made them infinite or
        NaN; records are strict JSON); empty with nothing added."""
        if not self.n:
            return {}
        out = {"mae": self.abs_err / self.n}
        if kind == "probability":
            out.update(accuracy=self.correct / self.n, log_loss=self.log_loss / self.n,
                       brier=self.sq_err / self.n)
        else:
            out["rmse"] = math.sqrt(self.sq_err / self.n)
        return {"n": self.n, **{k: v if math.isfinite(v) else None for k, v in out.items()}}

    def to_list(self) -> list:
        return [self.n, self.correct, self.log_loss, self.abs_err, self.sq_err]

    @classmethod
    def from_list(cls, values) -> "Prequential":
        return cls(*values) if values else cls()
