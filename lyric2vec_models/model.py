"""The tri-modal model: text head, audio encoder, metadata encoder, gated fusion.

Every tower ends in a projection to `embed_dim` and is L2-normalised, so cosine similarity is a dot
product and all views live in one space. Normalisation layers are per-sample (GroupNorm, LayerNorm),
never BatchNorm: a step then gives the same result however the batch is split across workers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lyric2vec_models.config import ModelConfig

VIEWS = ("lyrics", "desc", "audio", "meta", "fused")


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out)
    )


class TextHead(nn.Module):
    """Projection of pooled text features; optionally runs a transformer whose top layers train."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.transformer = None
        if cfg.text_trainable_layers > 0:
            from lyric2vec_models.text import freeze_except_top, load_hf

            _, self.transformer = load_hf(cfg.text_model_path)
            freeze_except_top(self.transformer, cfg.text_trainable_layers)
        self.norm = nn.LayerNorm(cfg.text_dim)  # MiniLM and DistilBERT features differ in scale
        self.proj = mlp(cfg.text_dim, cfg.text_hidden, cfg.embed_dim, cfg.dropout)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(feats))  # (B, D_text) -> (B, d)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tokens -> (B, D_text) features through the (partly trainable) transformer."""
        from lyric2vec_models.text import mean_pool

        assert self.transformer is not None, "pooled() needs text_trainable_layers > 0"
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)  # (B, L, D) -> (B, D)


class AudioEncoder(nn.Module):
    """Log-mel (B, n_mels, T) -> (B, d): CNN blocks, BiGRU over time, attentive or mean pooling."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        blocks, c_in = [], 1
        for c in cfg.audio_channels:
            blocks += [
                nn.Conv2d(c_in, c, kernel_size=3, padding=1, bias=False),  # the norm's shift replaces it
                nn.GroupNorm(min(4, c), c),
                nn.GELU(),
                nn.MaxPool2d(2),  # halves mel bins and frames
            ]
            c_in = c
        self.cnn = nn.Sequential(*blocks)
        freq_out = cfg.n_mels >> len(cfg.audio_channels)
        # Channels x remaining mel bins feed the GRU: flattening (not averaging) keeps pitch and key.
        self.gru = nn.GRU(c_in * freq_out, cfg.gru_hidden, batch_first=True, bidirectional=True)
        self.pooling = cfg.audio_pooling
        # No bias: softmax ignores a constant shift, so its gradient would be pure float noise.
        self.attn = nn.Linear(2 * cfg.gru_hidden, 1, bias=False) if cfg.audio_pooling == "attention" else None
        self.proj = nn.Linear(2 * cfg.gru_hidden, cfg.embed_dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        x = mels.float()
        # Per-sample standardisation: loudness and the log floor differ between renders and recordings.
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        x = self.cnn(x.unsqueeze(1))  # (B, 1, M, T) -> (B, C, M', T')
        B, C, M, T = x.shape
        x = x.permute(0, 3, 1, 2).reshape(B, T, C * M)  # (B, T', C*M')
        h, _ = self.gru(x)  # (B, T', 2H)
        if self.attn is not None:
            w = torch.softmax(self.attn(h), dim=1)  # (B, T', 1) weights over time
            pooled = (w * h).sum(1)
        else:
            pooled = h.mean(1)
        return self.proj(pooled)  # (B, d)


class MetaEncoder(nn.Module):
    """Artist and genre ids (index 0 = unknown bucket) -> (B, d)."""

    def __init__(self, cfg: ModelConfig, n_artists: int, n_genres: int):
        super().__init__()
        self.artist = nn.Embedding(n_artists + 1, cfg.meta_dim)  # +1: row 0 is the unknown bucket
        self.genre = nn.Embedding(n_genres + 1, cfg.meta_dim)
        self.mlp = mlp(2 * cfg.meta_dim, cfg.meta_hidden, cfg.embed_dim, cfg.dropout)

    def forward(self, artist_ids: torch.Tensor, genre_ids: torch.Tensor) -> torch.Tensor:
        # Ids outside the vocabulary (a model applied to a newer catalogue) fall into the unknown bucket.
        artist_ids = torch.where(artist_ids < self.artist.num_embeddings, artist_ids, 0).clamp(min=0)
        genre_ids = torch.where(genre_ids < self.genre.num_embeddings, genre_ids, 0).clamp(min=0)
        return self.mlp(torch.cat([self.artist(artist_ids), self.genre(genre_ids)], dim=-1))  # (B, d)


class GatedFusion(nn.Module):
    """z = a*z_text + b*z_audio + c*z_meta, gates (a, b, c) = softmax of a small net, per song.

    A missing view (mask False) gets gate 0 and the others are renormalised (softmax over the
    present views only); the gating net sees the masks so it can learn what is missing.
    """

    def __init__(self, cfg: ModelConfig, n_views: int = 3):
        super().__init__()
        self.net = mlp(n_views * cfg.embed_dim + n_views, cfg.gate_hidden, n_views, 0.0)

    def forward(self, zs: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.stack(masks, dim=1)  # (B, V) bool
        z = torch.stack(zs, dim=1) * m.unsqueeze(-1)  # (B, V, d), missing views zeroed
        logits = self.net(torch.cat([z.flatten(1), m.float()], dim=1))  # (B, V)
        any_view = m.any(dim=1, keepdim=True)  # (B, 1); a song with no view at all gets z = 0
        logits = logits.masked_fill(~m, float("-inf")).masked_fill(~any_view, 0.0)
        gates = torch.softmax(logits, dim=1) * any_view  # (B, V), rows sum to 1 (or 0)
        fused = (gates.unsqueeze(-1) * z).sum(1)  # (B, d)
        return F.normalize(fused, dim=-1), gates


class Lyric2Vec(nn.Module):
    def __init__(self, cfg: ModelConfig, n_artists: int, n_genres: int):
        super().__init__()
        self.cfg = cfg
        self.text = TextHead(cfg)
        self.audio = AudioEncoder(cfg)
        self.meta = MetaEncoder(cfg, n_artists, n_genres)
        self.fusion = GatedFusion(cfg)
        # CLIP's learnable temperature, as log(1/T); clamped in `scale()`.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature_init)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def encode_text(self, feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.text(feats)  # (B, D_text) -> (B, d)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text_tokens(self, input_ids, attention_mask, normalize: bool = True) -> torch.Tensor:
        return self.encode_text(self.text.pooled(input_ids, attention_mask), normalize)

    def encode_audio(self, mels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        z = self.audio(mels)  # (B, n_mels, T) -> (B, d)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_meta(self, artist_ids: torch.Tensor, genre_ids: torch.Tensor, normalize: bool = True):
        z = self.meta(artist_ids, genre_ids)  # (B,), (B,) -> (B, d)
        return F.normalize(z, dim=-1) if normalize else z

    def fuse(self, z_text, z_audio, z_meta, mask_text, mask_audio, mask_meta):
        """Normalised views (B, d) x3 and bool masks (B,) x3 -> fused (B, d), gates (B, 3)."""
        return self.fusion([z_text, z_audio, z_meta], [mask_text, mask_audio, mask_meta])

    def forward(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A training batch -> ({view: (B, d) normalised}, {view: (B,) bool mask})."""
        if "lyrics_ids" in batch:  # trainable text layers: tokens instead of cached features
            lyrics = self.encode_text_tokens(batch["lyrics_ids"], batch["lyrics_attn"])
            desc = self.encode_text_tokens(batch["desc_ids"], batch["desc_attn"])
        else:
            lyrics = self.encode_text(batch["text"])
            desc = self.encode_text(batch["desc"])
        audio = self.encode_audio(batch["mel"])
        meta = self.encode_meta(batch["artist"], batch["genre"])
        mask_text = batch["text_mask"].bool()
        ones = torch.ones_like(mask_text)
        fused, _ = self.fuse(lyrics, audio, meta, mask_text, ones, ones)
        views = {"lyrics": lyrics, "desc": desc, "audio": audio, "meta": meta, "fused": fused}
        masks = {"lyrics": mask_text, "desc": ones, "audio": ones, "meta": ones, "fused": ones}
        return views, masks
