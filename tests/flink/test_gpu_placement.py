"""With model.device = "gpu", the Tenant operator (the per-tenant path, its Trainer) is placed in a slot sharing group that asks the
cluster for one unit of Flink's "gpu" external resource. (Running it needs a GPU; this checks
the job graph, which is what a GPU cluster schedules from.)"""

from pipelines import flink_job
from pipelines.options import JobOptions
from state.config import UpmConfig


def trainer_groups(device, tmp_path):
    opts = JobOptions(inputs=(str(tmp_path / "in.jsonl"),), output_dir=str(tmp_path),
                      config=UpmConfig().with_override(f"model.device={device}"))
    env, _ = flink_job.environment(opts)
    flink_job.build(env, opts)
    graph = env._j_stream_execution_environment.getStreamGraph(False)
    nodes = graph.getStreamNodes().toArray()
    groups = {n.getOperatorName(): n.getSlotSharingGroup() for n in nodes}
    return groups, graph


def test_trainer_asks_for_a_gpu_slot(tmp_path):
    groups, graph = trainer_groups("gpu", tmp_path)
    assert groups["Tenant"] == "trainer-gpu"
    assert groups["TenantKey"] != "trainer-gpu"
    profile = graph.getSlotSharingGroupResource("trainer-gpu").get()
    assert "gpu" in str(profile.getExtendedResources())


def test_cpu_jobs_share_the_default_group(tmp_path):
    groups, _ = trainer_groups("auto", tmp_path)
    assert groups["Tenant"] == groups["TenantKey"]
