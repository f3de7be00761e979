"""The Flink job with its store on GCS (fake-gcs-server started by the fixture): snapshots
written there, registered in the registry there, and `upm registry verify` re-hashes them."""

import os
import subprocess
import sys

from model.lifecycle.signing import Verifier, generate_keypair
from model.lifecycle.store import open_store
from model.snapshot import decode
from pipelines.summary import read_records
from tests.core import servers


def test_flink_job_writes_snapshots_and_registry_to_gcs(tmp_path):
    with servers.fake_gcs() as endpoint:
        priv, pub = generate_keypair(tmp_path / "keys")
        env = {**os.environ, **servers.gcs_env(endpoint), "UPM_SIGNING_KEY_FILE": str(priv),
               "UPM_VERIFY_KEY_FILES": str(pub)}
        with servers.env(servers.gcs_env(endpoint)):
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage
            storage.Client(project="upm-test", credentials=AnonymousCredentials()) \
                .create_bucket("models")
        out = tmp_path / "out"
        proc = subprocess.run(
            [sys.executable, "-m", "runners.cli", "run", "--output", str(out), "--tenants", "2",
             "--windows-per-tenant", "1100", "--quiet",
             "--set", "snapshots.base_path=gs://models/upm/snapshots"],
            capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        snaps = read_records(out / "records", "snapshots")
        assert len(snaps) == 4 and all(s["uri"].startswith("gs://models/upm/snapshots/") for s in snaps)
        verify = subprocess.run([sys.executable, "-m", "runners.cli", "registry", "verify",
                                 "--store", "gs://models/upm", "--require-signed"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "0 bad artifact(s), 0 without a checked signature" in verify.stdout, verify.stdout
        listing = subprocess.run([sys.executable, "-m", "runners.cli", "registry", "list",
                                  "--store", "gs://models/upm"], capture_output=True, text=True,
                                 timeout=120, env=env).stdout
        assert "acme-v000002" in listing and "globex-v000002" in listing
        verifier = Verifier.from_pems([pub.read_bytes()])
        with servers.env(servers.gcs_env(endpoint)):
            store = open_store("gs://models/upm")
            for rec in snaps:  # each record's bytes, read back from GCS, are what it claims
                snap = decode(store.get_bytes(rec["uri"]), expected_sha256=rec["sha256"])
                assert snap.manifest["snapshot_id"] == rec["snapshot_id"]
                assert snap.manifest["windows_trained"] == rec["windows_trained"]
                verifier.verify(rec["snapshot_id"], rec["sha256"], rec["signature"])
