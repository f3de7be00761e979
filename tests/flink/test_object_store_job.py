"""The Flink job with its store on GCS (fake-gcs-server started by the fixture): snapshots
written there, registered in the registry there, and `upm registry verify` re-hashes them."""

import json
import os
import subprocess
import sys

from pipelines.summary import read_records
from tests.core import servers


def test_flink_job_writes_snapshots_and_registry_to_gcs(tmp_path):
    with servers.fake_gcs() as endpoint:
        env = {**os.environ, **servers.gcs_env(endpoint)}
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
                                 "--store", "gs://models/upm"], capture_output=True, text=True,
                                timeout=120, env=env)
        assert verify.returncode == 0 and "0 bad artifact(s)" in verify.stdout, verify.stdout
        listing = subprocess.run([sys.executable, "-m", "runners.cli", "registry", "list",
                                  "--store", "gs://models/upm"], capture_output=True, text=True,
                                 timeout=120, env=env).stdout
        assert "acme-v000002" in listing and "globex-v000002" in listing
        assert json.loads(json.dumps(snaps[0]))["sha256"]
