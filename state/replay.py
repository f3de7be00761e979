"""ReplayBuffer: the per-tenant state machine that turns an arrival-ordered stream of windows into
an event-time-ordered one, dropping duplicates and routing late windows. No I/O, no clock.

Time model. Each tenant has its own *frontier*: the largest event time (window_end) seen for it.
- A window is **held** until the frontier reaches `event_time + release_delay_ms`, then released
  in event-time order (ties by window_start, window_id). The engine's watermark does not release
  (it is one clock for all tenants, moved by any of them; state/tenant.py): everything held is
  released at the end of a bounded input, or when the tenant has been quiet for
  `quiet_release_ms` of processing time (`flush`), so a tenant that stops sending is not stuck.
- A window whose event time is older than `frontier - late_window_tolerance_ms` is **late**:
  it is counted and returned for the late output, never trained.
- A window behind what was already released but within the tolerance is released at once
  (counted as `reordered`): it is trained, just not in order.

Judging lateness against the tenant's own frontier rather than the engine watermark makes
the decisions a function of the tenant's own arrival order only, so they do not depend on
parallelism, on how partitions interleave, or on when an engine emits watermarks.

Dedup guarantee. Every accepted window_id is remembered together with its event time until the
frontier has moved `late_window_tolerance_ms` past it. A second arrival of a remembered id is a
duplicate. A second arrival after the id was forgotten is older than the late tolerance, so it is
late by the rule above. Either way a window is trained at most once, and memory holds only the
ids of the last `late_window_tolerance_ms` of event time.

Overflow policy. If more than `max_buffer_size` windows are held, the oldest held window is
released early (counted as `forced`): ordering among released windows is kept, nothing is
dropped, and memory stays bounded.

Future windows. A window more than `max_future_ms` ahead of its tenant's frontier is refused
(`refused`, reason `bad_timestamp: future`, counted as `future`, not as `received`): one
mistyped date would otherwise move the frontier and make every later window of the tenant
late. The first window of a tenant sets the frontier; the parser bounds absolute times.

Gaps. Released windows of a tenant are expected to tile time (each window_start equals the
previous window_end). If a released window starts more than `gap_tolerance_ms` after the
previous one ended, a Gap is emitted.
"""

from __future__ import annotations

import heapq
import json
import operator
import pickle
from dataclasses import dataclass, field

from state.parts import Changes
from state.records import Duplicate, FeatureWindow, Gap, LateWindow

NO_TIME = -(1 << 62)


@dataclass(frozen=True)
class ReplayConfig:
    max_buffer_size: int = 1000
    release_delay_ms: int = 5000
    late_window_tolerance_ms: int = 60000
    gap_tolerance_ms: int = 0
    max_future_ms: int = 86_400_000
    quiet_release_ms: int = 30_000  # processing time without a window before `flush`; 0: never


@dataclass
class ReplayOutput:
    released: list[FeatureWindow] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    late: list[LateWindow] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    refused: list[tuple[FeatureWindow, str]] = field(default_factory=list)  # (window, reason)

    def extend(self, other: "ReplayOutput") -> None:
        self.released += other.released
        self.duplicates += other.duplicates
        self.late += other.late
        self.gaps += other.gaps
        self.refused += other.refused


COUNTERS = ("received", "duplicates", "late", "released", "reordered", "forced", "gaps",
            "future")


# The release order of a tenant's windows (the streaming ReplayBuffer and the backfill alike):
# by end, then start, then id, so ties are broken the same way everywhere.
RELEASE_ORDER = ("window_end", "window_start", "window_id")


_order_key = operator.attrgetter(*RELEASE_ORDER)  # a window's place in that order


def is_gap(covered_until, next_start, tolerance_ms: int):
    """The gap rule: a released window starting more than `tolerance_ms` after the end of
    everything released before it. Scalars or numpy arrays (the backfill's columns)."""
    return next_start > covered_until + tolerance_ms


class ReplayBuffer:
    def __init__(self, tenant_id: str, config: ReplayConfig = ReplayConfig()):
        self.tenant_id = tenant_id
        self.config = config
        self.frontier = NO_TIME
        self.released_until: tuple[int, int, str] | None = None  # order key of the last release
        self.last_end = NO_TIME  # window_end of the last in-order release, for gap detection
        self.last_id = ""
        self._held: list[tuple[tuple[int, int, str], FeatureWindow]] = []
        self._seen: dict[str, int] = {}  # window_id -> event time
        self._seen_heap: list[tuple[int, str]] = []
        self._held_ids: dict[str, FeatureWindow] = {}
        self.counters = {k: 0 for k in COUNTERS}
        self.changes = Changes()
        self.changes.mark("m", new=True)

    # -- events ----------------------------------------------------------------------------

    def add(self, w: FeatureWindow) -> ReplayOutput:
        out = ReplayOutput()
        self.add_to(out, w)
        return out

    def add_to(self, out: ReplayOutput, w: FeatureWindow) -> None:
        """`add`, its output appended to `out` (one output for a batch of arrivals)."""
        self.changes.mark("m")
        t = w.event_time
        ahead = t - self.frontier
        if self.frontier != NO_TIME and ahead > self.config.max_future_ms:
            self.counters["future"] += 1
            out.refused.append((w, f"bad_timestamp: future: window_end is {ahead} ms past the "
                                   f"tenant's frontier (replay.max_future_ms = "
                                   f"{self.config.max_future_ms})"))
            return
        self.counters["received"] += 1
        if w.window_id in self._seen:
            self.counters["duplicates"] += 1
            out.duplicates.append(Duplicate(self.tenant_id, w.window_id, w.window_end))
            return
        if self.frontier != NO_TIME and t < self.frontier - self.config.late_window_tolerance_ms:
            self.counters["late"] += 1
            out.late.append(LateWindow(self.tenant_id, w.window_id, w.window_end, self.frontier,
                                       self.frontier - t, w.to_dict()))
            return
        self._remember(w.window_id, t)
        key = _order_key(w)
        if self.released_until is not None and key < self.released_until:
            self.counters["reordered"] += 1
            self.counters["released"] += 1
            out.released.append(w)
        else:
            heapq.heappush(self._held, (key, w))
            self._held_ids[w.window_id] = w
            self.changes.mark("h/" + w.window_id, new=True)
        if t > self.frontier:
            self.frontier = t
            self._forget_before(t - self.config.late_window_tolerance_ms)
        self._release_until(self.frontier - self.config.release_delay_ms, out)
        while len(self._held) > self.config.max_buffer_size:
            self.counters["forced"] += 1
            self._release_one(out)

    @classmethod
    def new(cls, tenant_id: str, config: ReplayConfig = ReplayConfig()) -> "ReplayBuffer":
        return cls(tenant_id, config)

    def next_timer(self) -> int | None:
        """None: releases follow the tenant's own arrivals, never an event-time timer (the
        engine's surface for every core object; quiet release is processing time)."""
        return None

    def flush(self) -> ReplayOutput:
        """Release everything held (end of a bounded input; a quiet tenant)."""
        out = ReplayOutput()
        while self._held:
            self._release_one(out)
        return out

    # -- queries ---------------------------------------------------------------------------

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def remembered(self) -> int:
        return len(self._seen)

    # -- internals -------------------------------------------------------------------------

    def _remember(self, window_id: str, t: int) -> None:
        self._seen[window_id] = t
        heapq.heappush(self._seen_heap, (t, window_id))
        self.changes.mark("s/" + window_id, new=True)

    def _forget_before(self, horizon: int) -> None:
        heap = self._seen_heap
        while heap and heap[0][0] < horizon:
            t, wid = heapq.heappop(heap)
            if self._seen.get(wid) == t:
                del self._seen[wid]
                self.changes.drop("s/" + wid)

    def _release_until(self, limit: int, out: ReplayOutput) -> None:
        while self._held and self._held[0][0][0] <= limit:
            self._release_one(out)

    def _release_one(self, out: ReplayOutput) -> None:
        key, w = heapq.heappop(self._held)
        del self._held_ids[w.window_id]
        self.changes.drop("h/" + w.window_id)
        self.changes.mark("m")
        if self.last_end != NO_TIME and is_gap(self.last_end, w.window_start,
                                               self.config.gap_tolerance_ms):
            self.counters["gaps"] += 1
            out.gaps.append(Gap(self.tenant_id, self.last_end, w.window_start,
                                w.window_start - self.last_end, self.last_id, w.window_id))
        self.last_end = max(self.last_end, w.window_end)
        self.last_id = w.window_id
        self.released_until = key
        self.counters["released"] += 1
        out.released.append(w)

    # -- engine state ----------------------------------------------------------------------
    # Parts (state/parts.py): "m" the scalars, "h/<window_id>" a held window, "s/<window_id>"
    # a remembered id's event time.

    def _meta(self) -> dict:
        return {"tenant_id": self.tenant_id, "frontier": self.frontier,
                "released_until": list(self.released_until) if self.released_until else None,
                "last_end": self.last_end, "last_id": self.last_id, "counters": self.counters}

    def encode_part(self, key: str) -> bytes:
        if key == "m":
            return pickle.dumps(self._meta(), 5)
        if key.startswith("h/"):
            return self._held_ids[key[2:]].to_state()
        return b"%d" % self._seen[key[2:]]

    def drain_changes(self, prefix: str = "") -> tuple[dict[str, bytes], list[str]]:
        return self.changes.drain(self.encode_part, prefix)

    def parts(self) -> dict[str, bytes]:
        """Every part (what an engine holds after all changes were drained)."""
        keys = ["m"] + ["h/" + i for i in self._held_ids] + ["s/" + i for i in self._seen]
        return {k: self.encode_part(k) for k in keys}

    @staticmethod
    def tenant_of(parts: dict[str, bytes]) -> str:
        return pickle.loads(parts["m"])["tenant_id"]

    @classmethod
    def from_parts(cls, parts: dict[str, bytes], config: ReplayConfig = ReplayConfig()
                   ) -> "ReplayBuffer":
        doc = pickle.loads(parts["m"])
        doc["held"] = [FeatureWindow.from_state(v) for k, v in parts.items() if k[:2] == "h/"]
        doc["seen"] = [(k[2:], int(v)) for k, v in parts.items() if k[:2] == "s/"]
        return cls._from_doc(doc, config)

    def to_bytes(self) -> bytes:
        doc = dict(self._meta(), held=[w.to_dict() for _, w in self._held],
                   seen=[[wid, t] for wid, t in self._seen.items()])
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes, config: ReplayConfig = ReplayConfig()) -> "ReplayBuffer":
        doc = json.loads(blob)
        doc["held"] = [FeatureWindow.from_dict(d) for d in doc["held"]]
        return cls._from_doc(doc, config)

    @classmethod
    def _from_doc(cls, doc: dict, config: ReplayConfig) -> "ReplayBuffer":
        rb = cls(doc["tenant_id"], config)
        rb.frontier = doc["frontier"]
        rb.released_until = tuple(doc["released_until"]) if doc["released_until"] else None
        rb.last_end = doc["last_end"]
        rb.last_id = doc["last_id"]
        rb._held = [(_order_key(w), w) for w in doc["held"]]
        heapq.heapify(rb._held)
        rb._held_ids = {w.window_id: w for w in doc["held"]}
        for wid, t in doc["seen"]:
            rb._remember(wid, t)
        rb.counters.update(doc["counters"])
        rb.changes = Changes()  # what was read is what the engine holds
        return rb
