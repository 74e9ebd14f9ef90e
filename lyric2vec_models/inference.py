"""Deterministic encoders for serving and for the embeddings asset.

eval mode, no_grad, fixed non-overlapping windows: the same input always gives the same vector.
All outputs are L2-normalised float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lyric2vec_models.audio import LogMel, fixed_windows
from lyric2vec_models.config import default_text_model_path
from lyric2vec_models.train import LoadedModel, encode_clips, load_model


def _resolve_text_path(saved: str) -> str:
    """The saved text model path, or the packaged MiniLM when the model moved to a machine without it."""
    if (Path(saved) / "config.json").is_file():
        return saved
    default = default_text_model_path()
    if "minilm" in saved.lower() and (Path(default) / "config.json").is_file():
        return default
    return saved  # TextEncoder raises an error naming the path


class Lyric2VecEncoder:
    def __init__(
        self,
        loaded: LoadedModel,
        device: str = "cpu",
        window_batch: int = 16,
        text_dtype: str = "float32",
        compile_text: bool = False,
    ):
        """`text_dtype`, `compile_text`: how the frozen text transformer runs (see text.TextEncoder)."""
        self.loaded = loaded
        self.text_dtype, self.compile_text = text_dtype, compile_text
        self.model = loaded.model.to(device).eval()
        self.config = loaded.config
        self.spec = loaded.spec
        self.model_version = loaded.model_version
        self.device = torch.device(device)
        self.window_batch = window_batch
        self.logmel = LogMel(self.spec)
        self.window_samples = int(round(self.config.window_seconds * self.spec.sample_rate))
        self.window_frames = self.spec.frames_for(self.config.window_seconds)
        # Name -> id; id 0 (unknown bucket) for anything not in the training vocabulary.
        self.artist_index = {a: i + 1 for i, a in enumerate(loaded.artist_vocab)}
        self.genre_index = {g: i + 1 for i, g in enumerate(loaded.genre_vocab)}
        self._text_encoder = None

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", **text_options) -> Lyric2VecEncoder:
        """`text_options`: text_dtype, compile_text."""
        return cls(load_model(model_dir, device=device), device=device, **text_options)

    @property
    def dim(self) -> int:
        return self.config.model.embed_dim

    # ------------------------------------------------------------ text

    @property
    def text_encoder(self):
        if self._text_encoder is None:  # loaded on first use: audio-only callers do not pay for it
            from lyric2vec_models.text import TextEncoder

            self._text_encoder = TextEncoder(
                _resolve_text_path(self.config.model.text_model_path),
                max_length=self.config.model.text_max_length,
                device=str(self.device),
                progress=False,
                dtype=self.text_dtype,
                compile=self.compile_text,
            )
        return self._text_encoder

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """(N,) strings (lyrics or descriptions) -> (N, d)."""
        if self.model.text.transformer is not None:  # fine-tuned text layers live in the model
            tok = self.text_encoder.tokenize(list(texts))
            z = self.model.encode_text_tokens(tok["input_ids"], tok["attention_mask"])
            return z.float().cpu().numpy()
        return self.encode_text_features(self.text_encoder.encode(list(texts)))

    @torch.no_grad()
    def encode_text_features(self, feats: np.ndarray) -> np.ndarray:
        """(N, D_text) cached pooled features -> (N, d)."""
        x = torch.as_tensor(np.asarray(feats, dtype=np.float32), device=self.device)
        return self.model.encode_text(x).float().cpu().numpy()

    # ------------------------------------------------------------ audio

    def audio_windows(self, wave: np.ndarray) -> torch.Tensor:
        """(samples,) at spec.sample_rate -> (W, n_mels, window_frames) log-mel of fixed windows."""
        windows = fixed_windows(np.asarray(wave, dtype=np.float32), self.window_samples)
        return self.logmel(np.stack(windows))  # (W, n_mels, frames)

    @torch.no_grad()
    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        """A whole track (samples,) -> (d,): each fixed window encoded once, averaged, normalised."""
        mels = self.audio_windows(wave)
        z = torch.cat([self.model.encode_audio(mels[s : s + self.window_batch].to(self.device)).cpu()
                       for s in range(0, len(mels), self.window_batch)])  # fmt: skip
        return torch.nn.functional.normalize(z.mean(0), dim=0).numpy()

    @torch.no_grad()
    def encode_audio_mels(self, mels: np.ndarray) -> np.ndarray:
        """Stored log-mel clips (M, n_mels, F) -> (M, d), windowed like `encode_audio`."""
        mels = np.asarray(mels)
        if mels.ndim == 2:
            return self.encode_audio_mels(mels[None])[0]
        return encode_clips(self.model, mels, self.window_frames, float(np.log(self.spec.log_floor)))

    # ------------------------------------------------------------ metadata and fusion

    def meta_ids(self, artists: list[str | None], genres: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        a = np.array([self.artist_index.get(x, 0) for x in artists], dtype=np.int64)
        g = np.array([self.genre_index.get(x, 0) for x in genres], dtype=np.int64)
        return a, g

    @torch.no_grad()
    def encode_meta(self, artists: list[str | None], genres: list[str | None]) -> np.ndarray:
        """Artist and genre names (N,) -> (N, d); unknown names use the unknown bucket."""
        a, g = self.meta_ids(artists, genres)
        z = self.model.encode_meta(torch.from_numpy(a).to(self.device), torch.from_numpy(g).to(self.device))
        return z.float().cpu().numpy()

    @torch.no_grad()
    def fuse(
        self,
        z_text: np.ndarray | None,
        z_audio: np.ndarray | None,
        z_meta: np.ndarray | None,
        masks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised views (N, d) (None = missing for all rows) -> fused (N, d), gates (N, 3) text/audio/meta.

        `masks` (three (N,) bool arrays) marks per-row missing views, e.g. instrumentals without lyrics.
        """
        views = [z_text, z_audio, z_meta]
        n = next(len(np.atleast_2d(v)) for v in views if v is not None)
        zs, ms = [], []
        for i, v in enumerate(views):
            present = v is not None
            zs.append(
                torch.as_tensor(np.atleast_2d(v), dtype=torch.float32)
                if present
                else torch.zeros(n, self.dim)
            )
            m = torch.full((n,), present)
            if masks is not None and present:
                m = m & torch.as_tensor(np.asarray(masks[i], dtype=bool))
            ms.append(m)
        fused, gates = self.model.fuse(*[z.to(self.device) for z in zs], *[m.to(self.device) for m in ms])
        return fused.float().cpu().numpy(), gates.float().cpu().numpy()
