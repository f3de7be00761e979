"""Publishing into a store that already holds a tenant's history: the same bytes again (a job
replaying after a restart) are accepted; a different stream's version N is refused as a
`upm.snapshot.refused` record, the stored version and the registry are kept, and nothing raises."""

import json

from model.lifecycle.registry import open_registry
from pipelines.summary import summarize
from tests.core.governance_helpers import make_snapshots
from transforms.publish import SnapshotPublisher


def test_same_bytes_are_idempotent_and_other_bytes_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("UPM_SIGNING_KEY_FILE", raising=False)
    pub = SnapshotPublisher(str(tmp_path), "zstd")
    ours = make_snapshots("acme", 1, seed=0)[0]
    theirs = make_snapshots("acme", 1, seed=1)[0]  # same id (acme-v000001), other weights
    assert ours.snapshot_id == theirs.snapshot_id
    record, refusal = pub.publish_or_refuse(ours)
    assert record and refusal is None
    again, refusal = pub.publish_or_refuse(ours)
    assert again.sha256 == record.sha256 and refusal is None
    none, refusal = pub.publish_or_refuse(theirs)
    assert none is None
    r = json.loads(refusal)
    assert r["event"] == "upm.snapshot.refused" and r["snapshot_id"] == ours.snapshot_id
    assert "different bytes" in r["reason"]
    assert open_registry(tmp_path).artifact("acme", ours.snapshot_id)["sha256"] == record.sha256
    # the summary counts it
    (tmp_path / "records" / "refusals").mkdir(parents=True)
    (tmp_path / "records" / "refusals" / "part-0.jsonl").write_text(refusal + "\n")
    assert summarize(tmp_path / "records")["totals"]["snapshots_refused"] == 1
