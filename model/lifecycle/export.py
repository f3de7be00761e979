"""Export a registered snapshot as a TensorFlow SavedModel any TensorFlow runtime can serve.

`export_saved_model` picks the snapshot a stage points to (or one by id), checks it as
promotion does (the stored bytes hash to the registered sha256; the registered signature is a
valid Ed25519 signature by a trusted key), builds model/serving_graph.ServingGraph from it and
saves it with its `serving_default` signature. Beside the graph, `assets.extra/upm-export.json`
(the SavedModel's place for such files) says where it came from (tenant, snapshot id, version,
the snapshot's sha256 and signature and the key that signed it, the model config, the inputs
and outputs) and lists the sha256 of every other file of the directory; `verify_export`
checks a directory against it, so a copy can be checked wherever it lands.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from model.lifecycle.registry import Registry
from model.lifecycle.signing import SignatureError, Verifier
from model.snapshot import SnapshotIntegrityError, decode

MANIFEST = Path("assets.extra") / "upm-export.json"
FORMAT = "upm-saved-model/1"


class ExportError(ValueError):
    pass


LATEST = "latest"


def _verified(entry, store, verifier: Verifier):
    """(the key that signed it, the decoded snapshot), or ExportError saying why not."""
    try:
        key = verifier.verify(entry.id, entry.sha256, entry.signature)
        return key, decode(store.get_bytes(entry.uri), entry.sha256)
    except (SignatureError, SnapshotIntegrityError) as e:
        raise ExportError(f"refused, as promotion would be: {e}") from None
    except OSError as e:
        raise ExportError(f"cannot read {entry.uri}: {e}") from None


def _newest_verified(tenant: str, view, store, verifier: Verifier):
    """The newest artifact that is not quarantined and passes verification, with what was
    passed over on the way (newest first) and why."""
    skipped = []
    for entry in reversed(view.artifacts()):
        if entry.quarantined:
            skipped.append(f"{entry.id}: quarantined")
            continue
        try:
            key, snap = _verified(entry, store, verifier)
        except ExportError as e:
            skipped.append(f"{entry.id}: {e}")
            continue
        return entry.id, entry, key, snap, skipped
    raise ExportError(f"no snapshot of {tenant} is both unquarantined and verified ("
                      + "; ".join(skipped) + ")")


def export_saved_model(registry: Registry, store, verifier: Verifier, tenant: str,
                       directory: str | os.PathLike, stage: str | None = None,
                       snapshot_id: str | None = None) -> dict:
    """Write the SavedModel and its manifest into `directory` (new or empty); return the
    manifest. Which snapshot: the one `stage` points to, `snapshot_id`, or (neither, or
    `snapshot_id = "latest"`) the newest that is not quarantined and passes verification; the
    manifest's `skipped` says which newer ones were passed over and why. Raises ExportError
    saying why nothing was written."""
    out = Path(directory)
    view = registry.view(tenant)
    if view is None:
        raise ExportError(f"tenant {tenant} has no artifacts in the registry")
    if stage is not None and snapshot_id is not None:
        raise ExportError("name a stage or a snapshot id, not both")
    skipped: list[str] = []
    chosen_as = "stage" if stage else "snapshot id"
    if stage is not None:
        snapshot_id = view.pointer(stage)
        if snapshot_id is None:
            raise ExportError(f"{tenant}/{stage} points to no snapshot")
    if snapshot_id in (None, LATEST):
        snapshot_id, entry, key, snap, skipped = _newest_verified(tenant, view, store, verifier)
        chosen_as = "newest verified"
    else:
        entry = view.artifact(snapshot_id)
        if entry is None:
            raise ExportError(f"{snapshot_id} is not a registered artifact of {tenant}")
        key, snap = _verified(entry, store, verifier)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory; export into a new one")

    import tensorflow as tf

    from model.lifecycle.adapter import ServingModel
    from model.serving_graph import SIGNATURE, ServingGraph

    served = ServingModel.from_snapshot(snap, registry.now_ms())
    graph = ServingGraph(served.model, served.params, served.norm)
    tf.saved_model.save(graph, str(out), signatures={SIGNATURE: graph.serve})
    manifest = {
        "format": FORMAT, "tenant_id": tenant, "stage": stage, "snapshot_id": snapshot_id,
        "chosen_as": chosen_as, "skipped": skipped,
        "version": served.version, "snapshot_sha256": entry.sha256,
        "snapshot_signature": entry.signature, "signed_by": key,
        "model": served.model.to_dict(), "exported_at": registry.now_ms(),
        "signature_def": {
            "name": SIGNATURE,
            "inputs": {"feature_names": "string [batch, k], UTF-8 names, '' pads",
                       "feature_values": "float64 [batch, k]"},
            "outputs": {"prediction": "float32 [batch]",
                        "embedding": f"float32 [batch, {served.model.embedding_dim}]"}},
        "files": _file_hashes(out),
    }
    (out / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify_export(directory: str | os.PathLike) -> dict:
    """The manifest of an export whose files are exactly the ones it lists, with their sha256;
    raises ExportError naming the first file that differs, is missing or is extra."""
    out = Path(directory)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{out} has no readable {MANIFEST}: {e}") from None
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{out / MANIFEST} is not a {FORMAT} manifest")
    listed, found = manifest["files"], _file_hashes(out)
    for name in sorted(set(listed) | set(found)):
        if name not in found:
            raise ExportError(f"{name} is listed but missing")
        if name not in listed:
            raise ExportError(f"{name} is not listed in the manifest")
        if found[name] != listed[name]:
            raise ExportError(f"{name} hashes to {found[name]}, the manifest says {listed[name]}")
    return manifest


def _file_hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel != MANIFEST:
            out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
