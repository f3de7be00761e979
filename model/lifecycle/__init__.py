"""The snapshot lifecycle: snapshot stores (local, GCS, S3), signing, the registry document and
its typed view, the governance events, the promotion policy and the governance actions on it
(promote, rollback, the reaction to a quarantine), retention, and the adapter agents embed to
verify and hot-reload a stage's snapshot. Nothing here trains or predicts: that is model/."""
