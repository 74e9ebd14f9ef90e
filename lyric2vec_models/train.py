"""Plain PyTorch training loop: one process, or one rank of a torch.distributed group (Ray Train).

Checkpoints (one directory per epoch, written atomically):
    model.safetensors, optimizer.safetensors, state.json (epoch, step, history, best, optimizer
    hyper-parameters), config.json, vocab.json, spec.json, manifest.json (sha256 of every file).
No pickle: tensors go to safetensors, everything else to JSON. A killed run resumes from its newest
intact checkpoint and, because all randomness is a function of (seed, epoch, row), continues exactly
as if it had not been killed. The best epoch by validation Recall@10 becomes `<out_dir>/model`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from lyric2vec_models.artifacts import ArtifactError, atomic_dir, file_entry, read_json, verify_files
from lyric2vec_models.audio import SpectrogramSpec
from lyric2vec_models.config import TrainConfig
from lyric2vec_models.data import CropDataset, GlobalBatchSampler, TrainingData, mel_windows
from lyric2vec_models.losses import contrastive_losses, gather_no_grad, gather_with_grad
from lyric2vec_models.metrics import retrieval_metrics
from lyric2vec_models.model import Lyric2Vec

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- model, optimiser, one step


def build_model(config: TrainConfig, n_artists: int, n_genres: int) -> Lyric2Vec:
    torch.manual_seed(config.seed)  # same init in every process and every run
    return Lyric2Vec(config.model, n_artists, n_genres)


def configure_for_data(config: TrainConfig, data: TrainingData) -> TrainConfig:
    """Copy of `config` with the dims that the data decides (text width, mel bins)."""
    cfg = TrainConfig.from_dict(config.to_dict())
    cfg.model.text_dim, cfg.model.n_mels = data.text_dim, data.spec.n_mels
    return cfg


def make_optimizer(model: Lyric2Vec, config: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices only; biases, norms, the temperature and embedding tables keep their scale.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (
                decay if p.ndim >= 2 and "meta.artist" not in name and "meta.genre" not in name else no_decay
            ).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 10%: a pure function of the step, so resuming needs no scheduler state."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def compute_loss(
    model: Lyric2Vec, batch: dict, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This rank's slice of a global batch -> the loss of the whole global batch and its named terms.

    Views are gathered across ranks with gradients, so W workers see W times the negatives.
    """
    views, masks = model(batch)  # {view: (b, d)}, {view: (b,)}
    views = {k: gather_with_grad(v) for k, v in views.items()}  # (W*b, d)
    masks = {k: gather_no_grad(m) for k, m in masks.items()}
    terms = contrastive_losses(views, masks, model.scale(), config.loss)
    return sum(terms.values()), terms


def average_gradients(model: torch.nn.Module) -> None:
    """Mean of the gradients over ranks, in one flat all_reduce (what DDP does, without its hooks)."""
    rank, size = world()
    if size == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def add_tokens(batch: dict, data: TrainingData, tokenizer, max_length: int, device) -> dict:
    """Token ids of lyrics and descriptions for the rows of `batch` (trainable text layers only)."""
    if data.lyrics_texts is None or data.desc_texts is None:
        raise ValueError("text_trainable_layers > 0 needs TrainingData.lyrics_texts and desc_texts")
    rows = batch["index"].tolist()
    for key, texts in (("lyrics", data.lyrics_texts), ("desc", data.desc_texts)):
        tok = tokenizer([texts[i] or "" for i in rows], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")  # fmt: skip
        batch[f"{key}_ids"], batch[f"{key}_attn"] = (
            tok["input_ids"].to(device),
            tok["attention_mask"].to(device),
        )
    return batch


def step_gradients(config: TrainConfig, data: TrainingData, rows: list[int]) -> tuple[float, torch.Tensor]:
    """Loss and (rank-averaged) flat gradient of one step on the global batch `rows`, from the seeded init.

    Each rank takes its equal slice of `rows`; used to check that W workers compute the same step as one.
    """
    rank, size = world()
    config = configure_for_data(config, data)
    model = build_model(config, len(data.artist_vocab), len(data.genre_vocab))
    dataset = CropDataset(data, data.spec.frames_for(config.window_seconds), config.seed, config.meta_dropout)
    part = len(rows) // size
    batch = torch.utils.data.default_collate([dataset[i] for i in rows[rank * part : (rank + 1) * part]])
    loss, _ = compute_loss(model, batch, config)
    loss.backward()
    average_gradients(model)
    return loss.item(), flat_grad(model)


# ---------------------------------------------------------------- validation


@torch.no_grad()
def encode_clips(model: Lyric2Vec, mels: np.ndarray, window_frames: int, pad_value: float, batch: int = 64):
    """(M, n_mels, F) clips -> (M, d): each clip cut into fixed windows, each encoded once, averaged."""
    device = next(model.parameters()).device
    windows = [mel_windows(np.asarray(m, dtype=np.float32), window_frames, pad_value) for m in mels]
    owner = np.repeat(np.arange(len(windows)), [len(w) for w in windows])  # window -> clip
    flat = np.concatenate(windows) if windows else np.zeros((0, mels.shape[1], window_frames), np.float32)
    z = torch.cat([model.encode_audio(torch.from_numpy(flat[s : s + batch]).to(device)).cpu()
                   for s in range(0, len(flat), batch)]) if len(flat) else torch.zeros(0, model.cfg.embed_dim)  # fmt: skip
    out = torch.zeros(len(windows), z.shape[1]).index_add_(0, torch.from_numpy(owner), z)
    return torch.nn.functional.normalize(out, dim=-1).numpy()


@torch.no_grad()
def encode_tracks(model: Lyric2Vec, data: TrainingData, config: TrainConfig) -> dict[str, np.ndarray]:
    """Per-track normalised lyrics, description and audio vectors (audio: mean over the track's clips)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = data.spec.frames_for(config.window_seconds)
    z_clip = encode_clips(model, data.mels, window, float(np.log(data.spec.log_floor)))
    audio = np.zeros((len(data), z_clip.shape[1]), np.float32)
    np.add.at(audio, data.clip_track, z_clip)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True).clip(1e-12)
    lyrics = model.encode_text(torch.from_numpy(data.text_feats).to(device)).cpu().numpy()
    desc = model.encode_text(torch.from_numpy(data.desc_feats).to(device)).cpu().numpy()
    model.train(was_training)
    return {"lyrics": lyrics, "desc": desc, "audio": audio, "audio_clips": z_clip}


def validate(model: Lyric2Vec, data: TrainingData, config: TrainConfig) -> dict[str, float]:
    """Recall@10 lyrics->audio and audio->lyrics over the tracks with lyrics; their mean picks the best epoch."""
    z = encode_tracks(model, data, config)
    rows = np.flatnonzero(data.text_mask)
    if len(rows) < 2:
        return {"val_recall10": float("nan")}
    truth = np.arange(len(rows))
    l2a = retrieval_metrics(z["lyrics"][rows], z["audio"][rows], truth, seed=config.seed)
    a2l = retrieval_metrics(z["audio"][rows], z["lyrics"][rows], truth, seed=config.seed)
    return {
        "val_recall10_lyrics_audio": l2a["recall@10"],
        "val_recall10_audio_lyrics": a2l["recall@10"],
        "val_recall10": 0.5 * (l2a["recall@10"] + a2l["recall@10"]),
        "val_gallery": len(rows),
        "val_random_recall10": l2a["random"]["recall@10"],
    }


# ---------------------------------------------------------------- saving and loading


MODEL_FILES = ("model.safetensors", "config.json", "vocab.json", "spec.json")


@dataclass
class LoadedModel:
    model: Lyric2Vec  # eval mode
    config: TrainConfig
    artist_vocab: list[str]
    genre_vocab: list[str]
    spec: SpectrogramSpec
    model_version: str
    manifest: dict


def _write_model_files(
    d: Path, model: Lyric2Vec, config: TrainConfig, artist_vocab, genre_vocab, spec: SpectrogramSpec
) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (d / "vocab.json").write_text(json.dumps({"artists": list(artist_vocab), "genres": list(genre_vocab)}))
    (d / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))


def _write_manifest(d: Path, files: list[str], **extra) -> dict:
    entries = {name: file_entry(d / name) for name in files}
    version = f"l2v-{extra.get('preset', 'model')}-{entries['model.safetensors']['sha256'][:12]}"
    manifest = {
        "files": entries,
        "model_version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    } | extra
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def save_model(
    model: Lyric2Vec,
    config: TrainConfig,
    out_dir: str | Path,
    artist_vocab=(),
    genre_vocab=(),
    spec: SpectrogramSpec | None = None,
    **extra,
) -> str:
    """Write a model directory atomically; returns its model_version (derived from the weights' hash)."""
    with atomic_dir(out_dir) as tmp:
        _write_model_files(tmp, model, config, artist_vocab, genre_vocab, spec or SpectrogramSpec())
        manifest = _write_manifest(tmp, list(MODEL_FILES), preset=config.name, **extra)
    return manifest["model_version"]


def _read_verified(model_dir: Path) -> dict:
    manifest = read_json(model_dir / "manifest.json")
    if "files" not in manifest or "model.safetensors" not in manifest["files"]:
        raise ArtifactError(f"{model_dir / 'manifest.json'}: no file list; not a lyric2vec model directory")
    verify_files(model_dir, manifest["files"])  # raises naming the missing / truncated / altered file
    return manifest


def load_model(model_dir: str | Path, device: str = "cpu") -> LoadedModel:
    """Load and verify a model (or checkpoint) directory; errors name the offending file."""
    model_dir = Path(model_dir)
    manifest = _read_verified(model_dir)
    config = TrainConfig.from_dict(read_json(model_dir / "config.json"))
    vocab = read_json(model_dir / "vocab.json")
    model = Lyric2Vec(config.model, len(vocab["artists"]), len(vocab["genres"]))
    try:
        state = load_file(str(model_dir / "model.safetensors"), device=device)
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers
        raise ArtifactError(f"{model_dir / 'model.safetensors'}: cannot read weights ({exc})") from exc
    model.load_state_dict(state)
    model.to(device).eval()
    spec = SpectrogramSpec(**read_json(model_dir / "spec.json"))
    return LoadedModel(
        model, config, vocab["artists"], vocab["genres"], spec, manifest["model_version"], manifest
    )


def save_checkpoint(ckpt_dir: Path, model, optimizer, config, data: TrainingData, state: dict) -> None:
    """Epoch checkpoint: the model files + optimizer tensors (safetensors) + JSON training state."""
    with atomic_dir(ckpt_dir) as tmp:
        _write_model_files(tmp, model, config, data.artist_vocab, data.genre_vocab, data.spec)
        opt = optimizer.state_dict()
        tensors = {f"{i}.{k}": v.contiguous() for i, s in opt["state"].items() for k, v in s.items()}
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = state | {"param_groups": opt["param_groups"]}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        _write_manifest(tmp, [*MODEL_FILES, "optimizer.safetensors", "state.json"],
                        preset=config.name, epoch=state["epoch"])  # fmt: skip


def load_checkpoint(ckpt_dir: Path, model, optimizer) -> dict:
    _read_verified(ckpt_dir)
    model.load_state_dict(load_file(str(ckpt_dir / "model.safetensors")))
    state = read_json(ckpt_dir / "state.json")
    per_param: dict[int, dict] = {}
    for key, value in load_file(str(ckpt_dir / "optimizer.safetensors")).items():
        i, name = key.split(".", 1)
        per_param.setdefault(int(i), {})[name] = value
    groups = [g | {"betas": tuple(g["betas"])} for g in state["param_groups"]]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    return state


def latest_checkpoint(root: Path) -> Path | None:
    """Newest epoch directory whose manifest verifies (a half-written or corrupt one is skipped)."""
    for d in sorted(root.glob("epoch_*"), reverse=True):
        try:
            _read_verified(d)
            return d
        except ArtifactError as exc:
            log.warning("skipping checkpoint %s: %s", d, exc)
    return None


# ---------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    epochs: list[dict] = field(default_factory=list)  # per epoch: loss, terms, val metrics, seconds
    best_epoch: int = -1
    best_val_recall10: float = float("nan")
    model_dir: Path | None = None
    model_version: str = ""
    resumed_from: int | None = None  # epoch of the checkpoint the run resumed from


def train(
    config: TrainConfig,
    data_train: TrainingData,
    data_val: TrainingData | None,
    out_dir: str | Path,
    resume: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train, checkpoint every epoch, keep the best epoch by val Recall@10 as `<out_dir>/model`.

    Inside a torch.distributed group each rank passes the same data; ranks split every global batch.
    """
    from tqdm.auto import tqdm

    out_dir, (rank, size) = Path(out_dir), world()
    ckpt_root = out_dir / "checkpoints"
    config = configure_for_data(config, data_train)
    device = torch.device(config.device)
    n_artists, n_genres = len(data_train.artist_vocab), len(data_train.genre_vocab)
    model = build_model(config, n_artists, n_genres).to(device)
    optimizer = make_optimizer(model, config)
    tokenizer = None
    if config.model.text_trainable_layers > 0:
        from lyric2vec_models.text import load_hf

        tokenizer, _ = load_hf(config.model.text_model_path)

    result, start_epoch, step = TrainResult(), 0, 0
    last = latest_checkpoint(ckpt_root) if resume else None
    if last is not None:
        state = load_checkpoint(last, model, optimizer)
        start_epoch, step = state["epoch"] + 1, state["step"]
        result.epochs, result.best_epoch = state["history"], state["best_epoch"]
        result.best_val_recall10, result.resumed_from = state["best_val_recall10"], state["epoch"]
        if rank == 0:
            log.info("resuming from %s (epoch %d done, step %d)", last, state["epoch"], step)

    crop = data_train.spec.frames_for(config.window_seconds)
    dataset = CropDataset(data_train, crop, config.seed, config.meta_dropout)
    sampler = GlobalBatchSampler(len(data_train), config.batch_size, config.seed, rank, size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.loader_workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )  # fmt: skip
    total_steps = config.epochs * len(sampler)
    step_model = torch.compile(model) if config.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: same stream on resume
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not progress or rank != 0, leave=False)  # fmt: skip
        for batch in bar:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if tokenizer is not None:
                batch = add_tokens(batch, data_train, tokenizer, config.model.text_max_length, device)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total_steps, config)
            with autocast:
                loss, terms = compute_loss(step_model, batch, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(model)
            optimizer.step()
            step += 1
            n_batches += 1
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1.0 / model.scale().item():.3f}")

        record = {k: v / max(n_batches, 1) for k, v in sums.items()}
        record |= {"epoch": epoch, "steps": step, "seconds": time.perf_counter() - t0,
                   "temperature": 1.0 / model.scale().item()}  # fmt: skip
        if rank == 0:
            if data_val is not None and len(data_val) and (epoch + 1) % config.val_every == 0:
                record |= validate(model, data_val, config)
            score = record.get("val_recall10", float("nan"))
            if data_val is None or not len(data_val):
                score = -record.get("loss", 0.0)  # no validation set: the lowest training loss wins
            if result.best_epoch < 0 or (not math.isnan(score) and not score <= result.best_val_recall10):
                result.best_epoch, result.best_val_recall10 = epoch, score
            result.epochs.append(record)
            state = {"epoch": epoch, "step": step, "history": result.epochs, "best_epoch": result.best_epoch,
                     "best_val_recall10": result.best_val_recall10}  # fmt: skip
            save_checkpoint(ckpt_root / f"epoch_{epoch:04d}", model, optimizer, config, data_train, state)
            _prune_checkpoints(ckpt_root, config.keep_checkpoints, result.best_epoch)
            log.info(
                "epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items() if isinstance(v, float)}
            )
        if size > 1:
            dist.barrier()  # ranks wait for rank 0's checkpoint before anyone can be killed past it
        if on_epoch_end is not None:
            on_epoch_end(record)

    if rank == 0:
        best = load_model(ckpt_root / f"epoch_{result.best_epoch:04d}")
        result.model_version = save_model(
            best.model, config, out_dir / "model", data_train.artist_vocab, data_train.genre_vocab,
            data_train.spec, epoch=result.best_epoch, val_recall10=result.best_val_recall10,
        )  # fmt: skip
        result.model_dir = out_dir / "model"
    if size > 1:
        dist.barrier()
    return result


def _prune_checkpoints(root: Path, keep: int, best_epoch: int) -> None:
    dirs = sorted(root.glob("epoch_*"))
    for d in dirs[: max(0, len(dirs) - keep)]:
        if d.name != f"epoch_{best_epoch:04d}":
            shutil.rmtree(d, ignore_errors=True)
