"""Champion/challenger: two frozen models of one tenant scored on the same windows. No I/O.

While an engine has told a tenant's TrainerState which snapshot its `active` stage points to
(the *champion*), every window the trainer scores is also predicted by the champion and by the
*candidate*, the last snapshot the trainer cut, frozen as it was written. Both are scored
prequentially on exactly the same windows (neither has seen them). When the next snapshot is
cut, the pair of scores goes into its manifest as `metrics.challenge` (the candidate is its
parent), the registry attaches them to the candidate, and the promotion policy's `champion`
check reads them: "not worse than active by more than X" (model/lifecycle/policy.py).

A Judge is plain arrays plus scores; it is engine state of the trainer (part "j").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model import standardize
from state.prequential import Prequential


@dataclass
class Judge:
    snapshot_id: str
    params: dict[str, np.ndarray]
    norm: dict[str, np.ndarray] | None
    scores: Prequential = field(default_factory=Prequential)

    def score(self, model, x: np.ndarray, truth: np.ndarray) -> None:
        """Predict hashed rows x (not standardized) and score them against `truth`."""
        preds, _ = standardize.predict(model, self.params, self.norm, x)
        self.scores.add(preds, truth, model.prediction_kind)

    @classmethod
    def frozen(cls, snapshot_id: str, params: dict, norm: dict | None) -> "Judge":
        return cls(snapshot_id, {k: v.copy() for k, v in params.items()},
                   None if norm is None else {k: v.copy() for k, v in norm.items()})

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {prefix + k: v for k, v in {**self.params, **(self.norm or {})}.items()}

    @classmethod
    def from_arrays(cls, model, prefix: str, arrays: dict, doc: list) -> "Judge":
        mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        norm = standardize.stats_of(mine, model.input_width) if model.standardize else None
        return cls(doc[0], {k: mine[k] for k in model.param_names}, norm,
                   Prequential.from_list(doc[1]))

    def to_doc(self) -> list:
        return [self.snapshot_id, self.scores.to_list()]


def challenge_record(candidate: Judge, champion: Judge, kind: str) -> dict:
    """`metrics.challenge` of a manifest: both models' scores on the same windows."""
    return {"candidate_snapshot_id": candidate.snapshot_id,
            "champion_snapshot_id": champion.snapshot_id,
            "candidate": candidate.scores.scores(kind), "champion": champion.scores.scores(kind)}
