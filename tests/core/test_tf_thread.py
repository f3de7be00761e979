"""TensorFlow objects are freed on the TensorFlow thread: after a Learner is built, trains on new
shapes (XLA compiles them) and predicts, Python's cyclic collector, run from any other thread,
finds no TensorFlow garbage. (On PEMJA's thread in a Flink TaskManager, a graph's destructor
waits forever: a job hung so.)"""

import gc

import numpy as np

from model.network import ModelConfig, TrainJob, init_params, init_slots, learner_for


def test_no_tensorflow_garbage_is_left_for_another_thread():
    gc.collect()
    cfg = ModelConfig(head="mlp_logistic", input_width=48, hidden_units=5, seed=4242)
    learner = learner_for(cfg)  # a config no other test uses: traced here
    params = init_params(cfg)
    slots = init_slots(cfg, params, 0.3)
    for steps in (1, 3, 9):
        x = np.ones((4 * steps, cfg.input_width), np.float32)
        y = np.ones(4 * steps, np.float32)
        job = TrainJob(params, slots, 0, 0.3, x, y, [4] * steps)
        learner.train([job] * (1 + steps % 2))
    learner.predict(params, np.zeros((3, cfg.input_width), np.float32))
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        left = {f"{type(o).__module__}.{type(o).__name__}" for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not {k for k in left if k.startswith("tensorflow")}, sorted(left)[:10]


def test_the_xla_program_cache_keeps_the_newest_programs(tmp_path):
    import os

    from model.tf_thread import _prune

    for i in range(5):
        f = tmp_path / f"program-{i}.pb"
        f.write_bytes(b"x")
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    _prune(str(tmp_path), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["program-3.pb", "program-4.pb"]
