"""Training as a Ray Train job (Ray 2.60, Train V2 API): local Ray on 127.0.0.1 or a cluster address.

Every worker runs `lyric2vec_models.train.train` on the same data; ranks split each global batch and
gather embeddings with gradients, so W workers see W times the negatives per step. Rank 0 writes the
checkpoints and the final model into `out_dir`, which on a multi-node cluster must be shared storage
(an NFS or PVC mount) so that a resumed run finds them.

    python -m lyric2vec_models.ray_train --data DATA_DIR --out OUT_DIR --preset small --num-workers 2
    ray job submit --address http://HEAD:8265 -- python -m lyric2vec_models.ray_train --address auto ...

DATA_DIR holds `train/` and `val/` written by `TrainingData.save`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from lyric2vec_models.artifacts import read_json
from lyric2vec_models.config import TrainConfig, preset
from lyric2vec_models.data import TrainingData
from lyric2vec_models.train import TrainResult, step_gradients, train

log = logging.getLogger(__name__)


def _scalars(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, int | float)}


def _train_worker(loop_config: dict) -> None:
    """Runs in each Ray Train worker; torch.distributed is already initialised by TorchTrainer."""
    import ray.train

    torch.set_num_threads(loop_config["threads"])
    config = TrainConfig.from_dict(loop_config["config"])
    if ray.train.get_context().get_world_size() > 1 and config.device == "cuda":
        config.device = f"cuda:{ray.train.get_context().get_local_rank()}"
    data_dir = Path(loop_config["data_dir"])
    data_train = TrainingData.load(data_dir / "train")
    data_val = TrainingData.load(data_dir / "val") if (data_dir / "val").is_dir() else None
    train(
        config, data_train, data_val, loop_config["out_dir"], resume=loop_config["resume"],
        on_epoch_end=lambda record: ray.train.report(_scalars(record)),
        progress=ray.train.get_context().get_world_rank() == 0,
    )  # fmt: skip


def _probe_worker(loop_config: dict) -> None:
    """One step's loss and gradient on a fixed global batch; rank 0 saves them (equivalence checks)."""
    import ray.train
    from safetensors.torch import save_file

    torch.set_num_threads(loop_config["threads"])
    config = TrainConfig.from_dict(loop_config["config"])
    data = TrainingData.load(loop_config["data_dir"])
    loss, grad = step_gradients(config, data, loop_config["rows"])
    if ray.train.get_context().get_world_rank() == 0:
        save_file({"loss": torch.tensor(loss), "grad": grad}, loop_config["out_file"])
    ray.train.report({"loss": loss})


def _ensure_ray(address: str | None, num_cpus: int | None):
    import ray

    if ray.is_initialized():
        return ray
    # Workers must import lyric2vec_models and use one torch thread each unless told otherwise.
    env = {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}}
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 runtime_env=env, log_to_driver=True)  # fmt: skip
    else:
        ray.init(address=address, runtime_env=env)
    return ray


def _launch(worker, loop_config: dict, run_name: str, storage: Path, address, num_workers, use_gpu, num_cpus):
    _ensure_ray(address, num_cpus)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(name=run_name, storage_path=str(storage.resolve())),
    )
    return trainer.fit()  # raises TrainingFailedError naming the worker error


def _data_dir(data, out_dir: Path) -> Path:
    """A directory with train/ (and val/): given as such, or written from a (train, val) pair."""
    if isinstance(data, str | Path):
        return Path(data)
    data_train, data_val = data
    target = out_dir / "data"
    data_train.save(target / "train")
    if data_val is not None:
        data_val.save(target / "val")
    return target


def run_ray_training(
    config: TrainConfig,
    data_dir_or_arrays: str | Path | tuple[TrainingData, TrainingData | None],
    out_dir: str | Path,
    address: str | None = None,
    num_workers: int = 1,
    use_gpu: bool = False,
    resume: bool = True,
    threads_per_worker: int = 1,
    num_cpus: int | None = None,
) -> TrainResult:
    """Train under a Ray TorchTrainer; returns the result read back from the checkpoints rank 0 wrote."""
    out_dir = Path(out_dir).resolve()
    data_dir = _data_dir(data_dir_or_arrays, out_dir)
    loop_config = {"config": config.to_dict(), "data_dir": str(data_dir.resolve()), "out_dir": str(out_dir),
                   "resume": resume, "threads": threads_per_worker}  # fmt: skip
    _launch(_train_worker, loop_config, "train", out_dir / "ray", address, num_workers, use_gpu, num_cpus)
    return read_result(out_dir)


def read_result(out_dir: str | Path) -> TrainResult:
    """TrainResult of a finished run from its final model and its newest checkpoint."""
    out_dir = Path(out_dir)
    manifest = read_json(out_dir / "model" / "manifest.json")
    last = sorted((out_dir / "checkpoints").glob("epoch_*"))[-1]
    state = read_json(last / "state.json")
    return TrainResult(
        epochs=state["history"], best_epoch=state["best_epoch"], best_val_recall10=state["best_val_recall10"],
        model_dir=out_dir / "model", model_version=manifest["model_version"],
    )  # fmt: skip


def probe_gradients(
    config: TrainConfig,
    data: TrainingData,
    rows: list[int],
    num_workers: int = 2,
    address: str | None = None,
    num_cpus: int | None = None,
) -> tuple[float, torch.Tensor]:
    """Loss and gradient of one step on global batch `rows` computed by `num_workers` Ray workers.

    Compare with `train.step_gradients(config, data, rows)` in one process: they must agree.
    """
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory(prefix="l2v-probe-") as tmp:
        tmp = Path(tmp)
        data.save(tmp / "data")
        loop_config = {"config": config.to_dict(), "data_dir": str(tmp / "data"), "rows": list(map(int, rows)),
                       "out_file": str(tmp / "grad.safetensors"), "threads": 1}  # fmt: skip
        _launch(_probe_worker, loop_config, "probe", tmp / "ray", address, num_workers, False, num_cpus)
        out = load_file(str(tmp / "grad.safetensors"))
    return float(out["loss"]), out["grad"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train Lyric2Vec as a Ray Train job.")
    p.add_argument("--data", required=True, help="directory with train/ and val/ (TrainingData.save)")
    p.add_argument(
        "--out", required=True, help="run directory: checkpoints/ and model/ (shared storage on a cluster)"
    )
    p.add_argument("--preset", default="small", choices=["tiny", "small", "base"])
    p.add_argument("--config", help="JSON file of a full TrainConfig (overrides --preset)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument(
        "--address", default=None, help="Ray address ('auto' inside `ray job submit`); none = local Ray"
    )
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = TrainConfig.from_dict(read_json(args.config)) if args.config else preset(args.preset)
    if args.epochs:
        config.epochs = args.epochs
    if args.use_gpu:
        config.device = "cuda"
    result = run_ray_training(config, args.data, args.out, address=args.address or os.environ.get("RAY_ADDRESS"),
                              num_workers=args.num_workers, use_gpu=args.use_gpu, resume=not args.no_resume)  # fmt: skip
    print(json.dumps({"model_dir": str(result.model_dir), "model_version": result.model_version,
                      "best_epoch": result.best_epoch, "best_val_recall10": result.best_val_recall10}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
