"""The governance events of DESIGN §3 (Activation, Rollback, Promotion): what a promotion or a
rollback announces on the governance sink. Plain frozen dataclasses; `to_dict` puts the event
name first. Times are epoch milliseconds, as the sink has always carried them. (The stream
records are in state/records.py, which re-exports these; model/ imports nothing above it.)"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar


class Event:
    event: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SnapshotActivated(Event):
    snapshot_id: str
    tenant_id: str
    stage: str
    version: int
    activated_at: int
    previous_snapshot_id: str | None
    actor: str
    reason: str
    event: ClassVar[str] = "ai.upm.snapshot.activated"


@dataclass(frozen=True)
class RolledBack(Event):
    tenant_id: str
    stage: str
    from_snapshot_id: str
    to_snapshot_id: str
    reason: str
    actor: str
    rolled_back_at: int
    event: ClassVar[str] = "ai.upm.rollback"


@dataclass(frozen=True)
class ArtifactPromoted(Event):
    tenant_id: str
    artifact_uri: str
    target_ref: str
    sha256: str
    actor: str
    reason: str
    promoted_at: int
    event: ClassVar[str] = "fl.artifact.promoted"
