"""Ray Train with 2 workers on local Ray (127.0.0.1, 2 CPUs, no dashboard) equals one process.

Starting Ray and a worker group costs ~20-30 s on 2 cores; the module shares one Ray instance.
"""

import pytest
import torch

from lyric2vec_models.config import preset
from lyric2vec_models.data import synthetic_training_data
from lyric2vec_models.ray_train import probe_gradients, run_ray_training
from lyric2vec_models.train import load_model, step_gradients, train

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})  # fmt: skip
    yield
    ray.shutdown()


def test_two_workers_give_the_same_loss_and_gradient_as_one_process(local_ray):
    data = synthetic_training_data(n_tracks=32, clips_per_track=2, frames=64, seed=0)
    cfg = preset("tiny")
    rows = list(range(0, 32, 2))  # one global batch of 16: 8 per worker
    loss_1, grad_1 = step_gradients(cfg, data, rows)
    loss_2, grad_2 = probe_gradients(cfg, data, rows, num_workers=2)
    assert loss_2 == pytest.approx(loss_1, rel=1e-6)  # observed equal to all printed digits
    assert grad_1.shape == grad_2.shape and grad_1.abs().max() > 1.0
    assert torch.allclose(grad_1, grad_2, rtol=1e-4, atol=1e-5)  # observed max abs diff 6e-6


def test_a_two_worker_ray_run_trains_like_one_process(local_ray, tmp_path):
    full = synthetic_training_data(n_tracks=48, clips_per_track=2, frames=64, seed=1)
    train_set, val_set = full.subset(range(32)), full.subset(range(32, 48))
    cfg = preset("tiny")
    cfg.epochs = 2
    one = train(cfg, train_set, val_set, tmp_path / "one", resume=False, progress=False)
    two = run_ray_training(cfg, (train_set, val_set), tmp_path / "two", num_workers=2)
    assert [e["epoch"] for e in two.epochs] == [0, 1]
    for a, b in zip(one.epochs, two.epochs, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    w1, w2 = load_model(one.model_dir).model.state_dict(), load_model(two.model_dir).model.state_dict()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)
