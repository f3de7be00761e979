"""Adapter: the object an agent embeds to serve a tenant's approved model and hot-reload it.

An adapter follows one stage of one tenant. `sync()` (called by a polling loop, or when an
`ai.upm.snapshot.activated` event arrives through `on_activation`) reads the stage pointer; if
it names a snapshot other than the one served, the adapter downloads it, verifies sha256 and
signature, decodes it and builds the serving model, retrying with exponential backoff
(`max_retries`, `retry_backoff_ms`). Only a model that passed every step replaces the served one,
in a single reference assignment, so a prediction sees either the old model or the new one,
never a half-loaded one. On any failure the old model keeps serving. With `UPM_KILL_SWITCH=1`
the adapter adopts nothing new. Every adoption and every failed sync is reported to the registry
(`adoption.<adapter_id>`).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from model.hashing import FeatureHasher
from model import standardize
from model.network import ModelConfig
from model.lifecycle.registry import Artifact, Registry, tenant_view
from model.lifecycle.signing import SignatureError, Verifier
from model.snapshot import SnapshotIntegrityError, decode


@dataclass(frozen=True)
class ServingModel:
    snapshot_id: str
    version: int
    model: ModelConfig
    params: dict[str, np.ndarray]
    loaded_at: int
    norm: dict[str, np.ndarray] | None = None  # the trainer's input statistics, if it kept them

    @classmethod
    def from_snapshot(cls, snap, loaded_at: int) -> "ServingModel":
        model = ModelConfig.from_dict(snap.manifest["model"])
        norm = standardize.stats_of(snap.arrays, model.input_width) if model.standardize else None
        return cls(snap.manifest["snapshot_id"], int(snap.manifest["version"]), model,
                   {k: snap.arrays[k] for k in model.param_names}, loaded_at, norm)

    def predict(self, rows: list[dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        x = FeatureHasher(self.model.input_width).transform(rows)
        return standardize.predict(self.model, self.params, self.norm, x)


SYNC_RESULTS = ("adopted", "unchanged", "killed", "failed", "empty")


@dataclass
class SyncResult:
    status: str            # one of SYNC_RESULTS
    snapshot_id: str | None = None
    error: str | None = None
    attempts: int = 0


def kill_switch_on(env=os.environ) -> bool:
    return env.get("UPM_KILL_SWITCH", "") in ("1", "true", "yes", "on")


class Adapter:
    def __init__(self, registry: Registry, store, verifier: Verifier, tenant: str,
                 stage: str = "active", adapter_id: str = "adapter", max_retries: int = 3,
                 retry_backoff_ms: int = 1000, sync_timeout_ms: int = 30_000,
                 sleep: Callable[[float], None] = time.sleep, env=os.environ,
                 clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self.store = store
        self.verifier = verifier
        self.tenant = tenant
        self.stage = stage
        self.adapter_id = adapter_id
        self.max_retries = max_retries
        self.retry_backoff_ms = retry_backoff_ms
        self.sync_timeout_ms = sync_timeout_ms
        self.sleep = sleep
        self.clock = clock
        self.env = env
        self.current: ServingModel | None = None
        self.failures = 0
        # Syncs by result (SyncResult.status), and the seconds from the stage pointing at the
        # snapshot to this adapter serving it, for the last adoption: read by an exporter
        # (runners/adapter_service.py) as Prometheus metrics.
        self.syncs: dict[str, int] = dict.fromkeys(SYNC_RESULTS, 0)
        self.last_adoption_lag_s: float | None = None
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()

    # -- serving ---------------------------------------------------------------------------

    def predict(self, rows: list[dict[str, float]]) -> np.ndarray:
        model = self._serving()
        return model.predict(rows)[0]

    def embed(self, rows: list[dict[str, float]]) -> np.ndarray:
        model = self._serving()
        return model.predict(rows)[1]

    def _serving(self) -> ServingModel:
        model = self.current  # one read: the whole call uses one model
        if model is None:
            raise RuntimeError(f"adapter {self.adapter_id} has no model for "
                               f"{self.tenant}/{self.stage} yet")
        return model

    # -- syncing ---------------------------------------------------------------------------

    def on_activation(self, event: dict) -> SyncResult | None:
        if event.get("tenant_id") == self.tenant and event.get("stage") == self.stage:
            return self.sync()
        return None

    def sync(self) -> SyncResult:
        with self._sync_lock:
            result = self._sync()
            self.syncs[result.status] += 1
            return result

    def _sync(self) -> SyncResult:
        """One sync; the caller holds `_sync_lock`."""
        if kill_switch_on(self.env):
            return SyncResult("killed", self.current.snapshot_id if self.current else None)
        t = self.registry.view(self.tenant)
        target = t.pointer(self.stage) if t else None
        if target is None:
            return SyncResult("empty")
        if self.current is not None and self.current.snapshot_id == target:
            return SyncResult("unchanged", target)
        entry = t.artifact(target)
        error = None
        deadline = self.clock() + self.sync_timeout_ms / 1000.0
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1 and self.clock() >= deadline:
                error = f"sync timed out after {self.sync_timeout_ms} ms ({error})"
                break
            try:
                model = self._load(target, entry)
            except (OSError, SnapshotIntegrityError, SignatureError, KeyError, ValueError) as e:
                error = f"{type(e).__name__}: {e}"
                if isinstance(e, (SnapshotIntegrityError, SignatureError)):
                    break  # bad bytes or signature will not heal by retrying
                if attempt <= self.max_retries:
                    self.sleep(self.retry_backoff_ms * 2 ** (attempt - 1) / 1000.0)
                continue
            self.current = model  # the atomic swap
            since = t.since(self.stage)
            if since is not None:
                self.last_adoption_lag_s = max(0, model.loaded_at - since) / 1000.0
            self._report(target, entry, None)
            return SyncResult("adopted", target, attempts=attempt)
        self.failures += 1
        self._report(target, entry, error)
        return SyncResult("failed", target, error, attempts=attempt)

    def _load(self, snapshot_id: str, entry: Artifact) -> ServingModel:
        data = self.store.get_bytes(entry.uri)
        self.verifier.verify(snapshot_id, entry.sha256, entry.signature)
        snap = decode(data, entry.sha256)
        return ServingModel.from_snapshot(snap, self.registry.now_ms())

    def _report(self, target: str, entry: Artifact, error: str | None) -> None:
        served = self.current

        def change(doc):
            rep = tenant_view(doc, self.tenant).report_adoption(
                self.adapter_id, stage=self.stage,
                snapshot_id=served.snapshot_id if served else None,
                version=served.version if served else None, reported_at=self.registry.now_ms())
            if error is None:
                rep["adopted_at"] = served.loaded_at
                rep["last_error"] = None
            else:
                rep["failures"] += 1
                rep["last_error"] = f"{target}: {error}"
        self.registry.update(change)

    def run_polling(self, interval_s: float) -> threading.Thread:
        """Sync every `interval_s` seconds on a daemon thread until `stop()`."""
        def loop():
            while not self._stop.wait(interval_s):
                self.sync()
        th = threading.Thread(target=loop, name=f"upm-adapter-{self.adapter_id}", daemon=True)
        th.start()
        return th

    def stop(self) -> None:
        self._stop.set()


def sync_fleet(adapters: list[Adapter], batch_size: int = 100) -> list[SyncResult]:
    """Sync many adapters, `batch_size` at a time in parallel threads (adapter.sync_batch_size)."""
    from concurrent.futures import ThreadPoolExecutor

    results: list[SyncResult] = []
    with ThreadPoolExecutor(max_workers=max(1, min(batch_size, 32))) as pool:
        for i in range(0, len(adapters), batch_size):
            results += list(pool.map(lambda a: a.sync(), adapters[i:i + batch_size]))
    return results
