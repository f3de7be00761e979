import pytest

from runners.job_flags import load_config
from state.config import ConfigError, UpmConfig


def test_defaults_are_the_seed_knobs_but_the_measured_learner():
    c = UpmConfig()
    assert (c.trainer.snapshot_interval, c.trainer.mode) == (1000, "shadow")
    # The seeds' Adam at 0.001 in batches of 32 trails River by 2-11 points; these defaults
    # were chosen by bench/quality.py (issue 12).
    assert (c.model.optimizer, c.trainer.learning_rate, c.trainer.batch_size,
            c.model.input_width) == ("ftrl", 0.3, 4, 1024)
    assert (c.replay.max_buffer_size, c.replay.release_delay_ms,
            c.replay.late_window_tolerance_ms) == (1000, 5000, 60000)
    assert (c.snapshots.compression, c.snapshots.retention_days) == ("zstd", 30)
    assert (c.drift.window_duration_ms, c.drift.drift_threshold, c.drift.sample_size,
            c.drift.quarantine_enabled) == (3_600_000, 0.2, 1000, True)
    assert (c.adapter.sync_batch_size, c.adapter.sync_timeout_ms, c.adapter.max_retries,
            c.adapter.retry_backoff_ms) == (100, 30000, 3, 1000)
    assert c.features.unified_model == () and not c.unified_model_enabled("acme")


def test_toml_file_tenant_override_and_cli_override(tmp_path):
    f = tmp_path / "upm.toml"
    f.write_text('[trainer]\nlearning_rate = 0.01\n[features]\nunified_model = ["acme"]\n'
                 '[tenants.acme.trainer]\nbatch_size = 8\n')
    c = load_config(str(f), ["drift.sample_size=50", "snapshots.compression=gzip"])
    assert c.trainer.learning_rate == 0.01 and c.drift.sample_size == 50
    assert c.snapshots.compression == "gzip"
    assert c.for_tenant("acme").trainer.batch_size == 8
    assert c.for_tenant("globex").trainer.batch_size == UpmConfig().trainer.batch_size
    assert c.unified_model_enabled("acme") and not c.unified_model_enabled("globex")


@pytest.mark.parametrize("doc,needle", [
    ({"trainer": {"learnig_rate": 0.1}}, "trainer.learnig_rate"),
    ({"trainr": {}}, "trainr"),
    ({"trainer": {"batch_size": 0}}, "trainer.batch_size"),
    ({"trainer": {"batch_size": 1.5}}, "trainer.batch_size"),
    ({"drift": {"drift_threshold": 1.5}}, "drift.drift_threshold"),
    ({"snapshots": {"compression": "lz4"}}, "snapshots.compression"),
    ({"model": {"device": "tpu"}}, "model.device"),
    ({"drift": {"quarantine_enabled": "yes"}}, "drift.quarantine_enabled"),
    ({"tenants": {"acme": {"trainer": {"batch_sise": 3}}}}, "tenants.acme.trainer.batch_sise"),
    ({"tenants": {"acme": {"model": {"head": "mlp"}}}}, "tenants.acme.model"),
])
def test_bad_config_is_refused_naming_the_key(doc, needle):
    with pytest.raises(ConfigError) as e:
        UpmConfig.from_dict(doc)
    assert needle in str(e.value)
