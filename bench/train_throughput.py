"""Training throughput (samples/s): bare step vs the full loop with data loading, per preset.

    python bench/train_throughput.py                       # tiny + small on this CPU (~1-2 min on 2 cores)
    python bench/train_throughput.py --ray-workers 1 2 4   # + Ray data-parallel speedup (needs the cores)

With CUDA it also runs the base preset (batch 256, 15-s clips, bf16, MiniLM-sized text tower with its
top 2 layers trained) in eager mode and under torch.compile. Synthetic data only: speed, never quality.
Results go to bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from lyric2vec_models.config import TrainConfig, preset
from lyric2vec_models.data import CropDataset, GlobalBatchSampler, synthetic_training_data
from lyric2vec_models.train import add_tokens, build_model, compute_loss, configure_for_data, make_optimizer

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_preset(cfg: TrainConfig, steps: int, warmup: int, clip_seconds: float) -> dict:
    """samples/s of (a) a bare step on a batch already on the device, (b) the loop with its DataLoader."""
    device = torch.device(cfg.device)
    spec_frames = 1 + int(round(clip_seconds * 22_050)) // 512
    n_tracks = cfg.batch_size * (steps + warmup)
    data = synthetic_training_data(n_tracks=n_tracks, clips_per_track=1, frames=spec_frames, seed=0,
                                   text_dim=384, n_artists=50, n_genres=8)  # fmt: skip
    if cfg.model.text_trainable_layers > 0:  # the text tower runs on tokens: give it lyrics-length texts
        words = ["love", "night", "river", "lord", "heart", "sing", "light", "morning", "sorrow", "grace"]
        data.lyrics_texts = [" ".join(words[(i + j) % 10] for j in range(120)) for i in range(n_tracks)]
        data.desc_texts = [
            f"a German chorale number {i} in G minor, four parts, organ" for i in range(n_tracks)
        ]
    cfg = configure_for_data(cfg, data)
    model = build_model(cfg, len(data.artist_vocab), len(data.genre_vocab)).to(device)
    opt = make_optimizer(model, cfg)
    step_model = torch.compile(model) if cfg.compile else model
    tokenizer = None
    if cfg.model.text_trainable_layers > 0:
        from lyric2vec_models.text import load_hf

        tokenizer, _ = load_hf(cfg.model.text_model_path)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def step(batch):
        with autocast:
            loss, _ = compute_loss(step_model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def prepare(batch):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if tokenizer is not None:
            batch = add_tokens(batch, data, tokenizer, cfg.model.text_max_length, device)
        return batch

    dataset = CropDataset(data, data.spec.frames_for(cfg.window_seconds), cfg.seed, cfg.meta_dropout)
    sampler = GlobalBatchSampler(len(data), cfg.batch_size, cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.loader_workers,
                                         pin_memory=device.type == "cuda")  # fmt: skip
    model.train()
    fixed = prepare(next(iter(loader)))
    for _ in range(warmup):  # compile, allocator and oneDNN warm-up
        step(fixed)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(fixed)
    sync(device)
    bare = cfg.batch_size * steps / (time.perf_counter() - t0)

    done, t0 = 0, None
    for i, batch in enumerate(loader):  # the real loop: crops, collation, host->device, tokens
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        step(prepare(batch))
        done += i >= warmup
    sync(device)
    loop = cfg.batch_size * done / (time.perf_counter() - t0)
    return {
        "preset": cfg.name, "device": str(device), "batch": cfg.batch_size, "crop_seconds": cfg.window_seconds,
        "precision": cfg.precision, "compile": cfg.compile, "steps": steps, "bare_step_samples_per_s": round(bare, 1),
        "full_loop_samples_per_s": round(loop, 1), "loop_vs_bare": round(loop / bare, 3),
    }  # fmt: skip


def bench_ray(workers: list[int], epochs: int = 2) -> list[dict]:
    """Epoch throughput of the small preset under Ray with W workers (one torch thread each)."""
    from lyric2vec_models.ray_train import run_ray_training

    cfg = preset("small")
    cfg.epochs = epochs
    full = synthetic_training_data(n_tracks=512 + 64, clips_per_track=1, frames=1 + 10 * 22_050 // 512,
                                   text_dim=384, seed=0)  # fmt: skip
    data = (full.subset(range(512)), full.subset(range(512, 576)))
    rows = []
    for w in workers:
        with tempfile.TemporaryDirectory(prefix="l2v-ray-bench-") as tmp:
            # num_cpus: a local Ray must offer W CPU slots or the workers wait forever; on a
            # machine with fewer cores than workers the figure shows oversubscription, not scaling.
            result = run_ray_training(cfg, data, tmp, num_workers=w, resume=False, num_cpus=max(workers))
        sec = min(e["seconds"] for e in result.epochs)  # best epoch: excludes worker start-up
        rows.append({"workers": w, "samples_per_s": round(512 // cfg.batch_size * cfg.batch_size / sec, 1)})
    for r in rows:
        r["speedup"] = round(r["samples_per_s"] / rows[0]["samples_per_s"], 2)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ray-workers", type=int, nargs="*", default=[], help="e.g. 1 2 4")
    p.add_argument("--steps", type=int, default=5, help="timed steps per CPU measurement")
    args = p.parse_args()
    torch.manual_seed(0)
    out = {"machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                       "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
           "runs": []}  # fmt: skip
    for name, steps in (("tiny", 20), ("small", args.steps)):
        cfg = preset(name)
        out["runs"].append(
            bench_preset(cfg, steps=steps, warmup=3, clip_seconds=30.0 if name == "small" else 3.0)
        )
        print(json.dumps(out["runs"][-1]))
    if torch.cuda.is_available():  # untested here (no GPU on the dev box); the code path is the trainer's
        for compile_ in (False, True):
            cfg = preset("base")
            cfg.compile = compile_
            out["runs"].append(bench_preset(cfg, steps=20, warmup=5 if compile_ else 2, clip_seconds=15.0))
            print(json.dumps(out["runs"][-1]))
    if args.ray_workers:
        out["ray"] = bench_ray(args.ray_workers)
        print(json.dumps(out["ray"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
