"""The training loop on a tiny synthetic catalogue: learning, reproducibility, checkpoints, resume."""

import json

import pytest
import torch
from torch.utils.data import default_collate

from lyric2vec_models.config import TrainConfig, preset
from lyric2vec_models.data import CropDataset, TrainingData, synthetic_training_data
from lyric2vec_models.train import build_model, compute_loss, configure_for_data, load_model, train


@pytest.fixture(scope="module")
def data():
    full = synthetic_training_data(n_tracks=80, clips_per_track=2, frames=64, seed=0)
    return full.subset(range(64)), full.subset(range(64, 80))


def tiny(epochs=1) -> TrainConfig:
    cfg = preset("tiny")
    cfg.epochs = epochs
    return cfg


@torch.no_grad()
def full_batch_loss(model, data: TrainingData, cfg: TrainConfig) -> float:
    """Loss of the whole set as one batch, fixed crops (epoch 0), eval mode."""
    ds = CropDataset(data, data.spec.frames_for(cfg.window_seconds), seed=123)
    model.eval()
    return compute_loss(model, default_collate([ds[i] for i in range(len(data))]), cfg)[0].item()


def weights(model_dir) -> dict[str, torch.Tensor]:
    return load_model(model_dir).model.state_dict()


def test_one_epoch_lowers_the_loss(data, tmp_path):
    train_set, val_set = data
    cfg = tiny(epochs=1)
    before = full_batch_loss(build_model(configure_for_data(cfg, train_set), 5, 3), train_set, cfg)
    result = train(cfg, train_set, val_set, tmp_path, resume=False, progress=False)
    after = full_batch_loss(load_model(result.model_dir).model, train_set, cfg)
    assert len(result.epochs) == 1 and result.epochs[0]["steps"] == 4  # 64 tracks / batch 16
    assert after < before - 0.5, (before, after)  # observed 34.1 -> 26.5
    assert 0.0 <= result.best_val_recall10 <= 1.0


def test_killed_run_resumes_and_matches_an_uninterrupted_one(data, tmp_path):
    train_set, val_set = data
    cfg = tiny(epochs=3)
    whole = train(cfg, train_set, val_set, tmp_path / "whole", resume=False, progress=False)

    class Killed(RuntimeError):
        pass

    def kill_after_epoch_1(record):
        if record["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, train_set, val_set, tmp_path / "killed", on_epoch_end=kill_after_epoch_1, progress=False)
    ckpts = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert ckpts == ["epoch_0000", "epoch_0001"] and not (tmp_path / "killed" / "model").exists()
    # The checkpoint is the state after epoch 1 of the uninterrupted run, weights and all.
    state = json.loads((tmp_path / "killed" / "checkpoints" / "epoch_0001" / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 8

    resumed = train(cfg, train_set, val_set, tmp_path / "killed", resume=True, progress=False)
    assert resumed.resumed_from == 1
    assert [e["epoch"] for e in resumed.epochs] == [0, 1, 2] and resumed.epochs[-1]["steps"] == 12
    for a, b in zip(whole.epochs, resumed.epochs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert resumed.best_epoch == whole.best_epoch
    w1, w2 = weights(whole.model_dir), weights(resumed.model_dir)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6), k


def test_best_epoch_is_the_saved_model_and_checkpoints_are_pruned(data, tmp_path):
    train_set, val_set = data
    cfg = tiny(epochs=3)
    cfg.keep_checkpoints = 1
    result = train(cfg, train_set, val_set, tmp_path, resume=False, progress=False)
    recalls = [e["val_recall10"] for e in result.epochs]
    assert result.best_epoch == recalls.index(max(recalls))  # first of the best on ties
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["epoch"] == result.best_epoch and manifest["model_version"] == result.model_version
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == sorted({f"epoch_{result.best_epoch:04d}", "epoch_0002"})


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    train_set, val_set = data
    cfg = tiny(epochs=2)
    train(cfg, train_set, val_set, tmp_path, resume=False, progress=False)
    opt = tmp_path / "checkpoints" / "epoch_0001" / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:50])  # killed mid-write by something that ignored atomic writes
    result = train(cfg, train_set, val_set, tmp_path, resume=True, progress=False)
    assert result.resumed_from == 0 and len(result.epochs) == 2


def test_training_data_round_trips_without_pickle(data, tmp_path):
    train_set, _ = data
    train_set.save(tmp_path / "d")
    back = TrainingData.load(tmp_path / "d")
    assert (back.track_ids == train_set.track_ids).all() and back.artist_vocab == train_set.artist_vocab
    assert (back.mels[3] == train_set.mels[3]).all() and (back.clip_track == train_set.clip_track).all()
