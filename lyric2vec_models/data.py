"""Training data as plain arrays, the crop dataset, the global-batch sampler and a synthetic generator.

Randomness is a pure function of (seed, epoch, track row): which clip, which crop and whether the
artist is hidden do not depend on the process, the worker count or how far a killed run had got,
which is what makes resumed and multi-worker runs reproduce a single-process run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lyric2vec_models.artifacts import atomic_dir, read_json
from lyric2vec_models.audio import SpectrogramSpec


@dataclass
class TrainingData:
    """What the trainer consumes. N tracks, M audio clips (a track has >= 1 clip).

    Id 0 of artist_ids / genre_ids is the unknown bucket; id k > 0 names artist_vocab[k - 1].
    """

    track_ids: np.ndarray  # (N,) str
    text_feats: np.ndarray  # (N, D) float32 pooled lyrics features (zeros where there are no lyrics)
    text_mask: np.ndarray  # (N,) bool, False = instrumental (no lyrics)
    desc_feats: np.ndarray  # (N, D) float32 pooled features of the metadata description
    artist_ids: np.ndarray  # (N,) int64
    genre_ids: np.ndarray  # (N,) int64
    mels: np.ndarray  # (M, n_mels, F) float16 log-mel, may be a np.memmap
    clip_track: np.ndarray  # (M,) int64 clip -> track row
    artist_vocab: list[str] = field(default_factory=list)
    genre_vocab: list[str] = field(default_factory=list)
    spec: SpectrogramSpec = field(default_factory=SpectrogramSpec)
    lyrics_texts: list[str] | None = None  # raw texts, needed only when text layers train
    desc_texts: list[str] | None = None

    def __post_init__(self):
        n, m = len(self.track_ids), len(self.clip_track)
        checks = [
            (self.text_feats.shape[0] == n, f"text_feats has {self.text_feats.shape[0]} rows, tracks {n}"),
            (self.desc_feats.shape == self.text_feats.shape, "desc_feats and text_feats differ in shape"),
            (len(self.text_mask) == n and len(self.artist_ids) == n and len(self.genre_ids) == n,
             "text_mask / artist_ids / genre_ids must have one entry per track"),
            (self.mels.ndim == 3 and self.mels.shape[0] == m, f"mels {self.mels.shape} vs {m} clips"),
            (m == 0 or (self.clip_track.min() >= 0 and self.clip_track.max() < n), "clip_track out of range"),
            (self.mels.shape[1] == self.spec.n_mels, f"mels have {self.mels.shape[1]} bins, spec {self.spec.n_mels}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"TrainingData: {msg}")
        if n and np.bincount(self.clip_track, minlength=n).min() == 0:
            raise ValueError("TrainingData: some tracks have no audio clip")

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def text_dim(self) -> int:
        return int(self.text_feats.shape[1])

    def clips_of(self) -> list[np.ndarray]:
        """Clip rows of each track, in clip order."""
        order = np.argsort(self.clip_track, kind="stable")
        return np.split(order, np.cumsum(np.bincount(self.clip_track, minlength=len(self)))[:-1])

    def subset(self, rows: np.ndarray) -> TrainingData:
        """The tracks `rows` (and only their clips), vocabularies kept so ids stay valid."""
        rows = np.asarray(rows, dtype=np.int64)
        new_row = np.full(len(self), -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        clips = np.flatnonzero(new_row[self.clip_track] >= 0)
        texts = lambda t: None if t is None else [t[i] for i in rows]  # noqa: E731
        return TrainingData(
            track_ids=self.track_ids[rows], text_feats=self.text_feats[rows], text_mask=self.text_mask[rows],
            desc_feats=self.desc_feats[rows], artist_ids=self.artist_ids[rows], genre_ids=self.genre_ids[rows],
            mels=self.mels[clips], clip_track=new_row[self.clip_track[clips]],
            artist_vocab=self.artist_vocab, genre_vocab=self.genre_vocab, spec=self.spec,
            lyrics_texts=texts(self.lyrics_texts), desc_texts=texts(self.desc_texts),
        )  # fmt: skip

    def save(self, directory: str | Path) -> Path:
        """Write as arrays.npz + mels.npy (memory-mappable) + meta.json; no pickle anywhere."""
        with atomic_dir(directory) as tmp:
            np.savez(
                tmp / "arrays.npz", track_ids=self.track_ids.astype(str), text_feats=self.text_feats,
                text_mask=self.text_mask, desc_feats=self.desc_feats, artist_ids=self.artist_ids,
                genre_ids=self.genre_ids, clip_track=self.clip_track,
            )  # fmt: skip
            np.save(tmp / "mels.npy", np.asarray(self.mels, dtype=np.float16))
            meta = {"artist_vocab": self.artist_vocab, "genre_vocab": self.genre_vocab,
                    "spec": self.spec.to_dict(), "lyrics_texts": self.lyrics_texts, "desc_texts": self.desc_texts}  # fmt: skip
            (tmp / "meta.json").write_text(json.dumps(meta))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> TrainingData:
        directory = Path(directory)
        if not (directory / "arrays.npz").is_file():
            raise FileNotFoundError(
                f"{directory}/arrays.npz: missing; write training data with TrainingData.save"
            )
        meta = read_json(directory / "meta.json")
        with np.load(directory / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            **arrays, mels=np.load(directory / "mels.npy", mmap_mode="r"),
            artist_vocab=meta["artist_vocab"], genre_vocab=meta["genre_vocab"],
            spec=SpectrogramSpec(**meta["spec"]), lyrics_texts=meta["lyrics_texts"], desc_texts=meta["desc_texts"],
        )  # fmt: skip


def track_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, row])


class CropDataset(Dataset):
    """Item i = track row i with one random clip, one random crop of `crop_frames`, all seeded."""

    def __init__(self, data: TrainingData, crop_frames: int, seed: int, meta_dropout: float = 0.0):
        self.data, self.crop_frames, self.seed, self.meta_dropout = data, crop_frames, seed, meta_dropout
        self.clips = data.clips_of()
        self.pad_value = float(np.log(data.spec.log_floor))  # log-mel of silence
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        d, rng = self.data, track_rng(self.seed, self.epoch, i)
        clip = int(rng.choice(self.clips[i]))
        frames = d.mels.shape[2]
        start = int(rng.integers(0, max(frames - self.crop_frames, 0) + 1))
        mel = np.full((d.mels.shape[1], self.crop_frames), self.pad_value, dtype=np.float32)
        piece = d.mels[clip, :, start : start + self.crop_frames]
        mel[:, : piece.shape[1]] = piece  # (n_mels, crop_frames); short clips padded with silence
        artist = 0 if rng.random() < self.meta_dropout else int(d.artist_ids[i])
        return {
            "index": torch.tensor(i),
            "mel": torch.from_numpy(mel),
            "text": torch.from_numpy(np.asarray(d.text_feats[i], dtype=np.float32)),
            "text_mask": torch.tensor(bool(d.text_mask[i])),
            "desc": torch.from_numpy(np.asarray(d.desc_feats[i], dtype=np.float32)),
            "artist": torch.tensor(artist, dtype=torch.int64),
            "genre": torch.tensor(int(d.genre_ids[i]), dtype=torch.int64),
        }


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's slice of each global batch of a seeded per-epoch permutation.

    Global batch b is perm[b*B:(b+1)*B]; rank r takes its r-th of W equal parts. The last,
    incomplete batch is dropped (unless it is the only one) so every rank has the same size.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} does not split evenly over {world} workers")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        perm = np.random.default_rng([self.seed, self.epoch, 2**31 - 1]).permutation(self.n)
        B = min(self.batch_size, self.n - self.n % self.world)  # a tiny set still gives one batch
        return [perm[s : s + B] for s in range(0, self.n - B + 1, B)]

    def __iter__(self):
        for batch in self.global_batches():
            part = len(batch) // self.world
            yield batch[self.rank * part : (self.rank + 1) * part].tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def synthetic_training_data(
    n_tracks: int = 64,
    clips_per_track: int = 2,
    n_mels: int = 64,
    frames: int = 96,
    seed: int = 0,
    text_dim: int = 32,
    n_artists: int = 5,
    n_genres: int = 3,
    instrumental_fraction: float = 0.1,
) -> TrainingData:
    """A catalogue whose audio carries a learnable signal tied to the text (tests and benchmarks only).

    Each track has a latent u (8,); lyrics and description features are noisy linear maps of u, and
    its spectrogram has a mel envelope set by u, so audio and text can be matched.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_tracks, 8)).astype(np.float32)  # (N, 8) latent song identity
    text = u @ rng.normal(size=(8, text_dim)) + 0.1 * rng.normal(size=(n_tracks, text_dim))
    desc = u @ rng.normal(size=(8, text_dim)) + 0.3 * rng.normal(size=(n_tracks, text_dim))
    text_mask = rng.random(n_tracks) >= instrumental_fraction
    text = np.where(text_mask[:, None], text, 0.0).astype(np.float32)
    envelope = u @ rng.normal(size=(8, n_mels)) / np.sqrt(8)  # (N, n_mels) log-level per mel bin
    clip_track = np.repeat(np.arange(n_tracks), clips_per_track)
    noise = rng.normal(size=(len(clip_track), n_mels, frames))
    pulse = np.sin(np.arange(frames) * (0.3 + 0.1 * rng.random((len(clip_track), 1, 1))))  # per-clip rhythm
    mels = (envelope[clip_track][:, :, None] * (1.0 + 0.2 * pulse) + 0.5 * noise - 4.0).astype(np.float16)
    artist_ids = (np.argmax(u, axis=1) % n_artists + 1).astype(np.int64)  # artist follows the latent
    genre_ids = rng.integers(1, n_genres + 1, size=n_tracks).astype(np.int64)
    return TrainingData(
        track_ids=np.array([f"syn{i:05d}" for i in range(n_tracks)]),
        text_feats=text, text_mask=text_mask, desc_feats=desc.astype(np.float32),
        artist_ids=artist_ids, genre_ids=genre_ids, mels=mels, clip_track=clip_track.astype(np.int64),
        artist_vocab=[f"artist{k}" for k in range(1, n_artists + 1)],
        genre_vocab=[f"genre{k}" for k in range(1, n_genres + 1)],
        spec=SpectrogramSpec(n_mels=n_mels),
    )  # fmt: skip


def mel_windows(
    mel: np.ndarray, window_frames: int, pad_value: float, min_fraction: float = 0.5
) -> np.ndarray:
    """(n_mels, F) -> (W, n_mels, window_frames): consecutive, non-overlapping frame windows.

    The same rule as `audio.fixed_windows` in the frame domain: each frame lands in at most one
    window; a tail of at least `min_fraction` of a window is kept, padded with silence.
    """
    n = mel.shape[1]
    starts = list(range(0, n - window_frames + 1, window_frames))
    rest = n - len(starts) * window_frames
    if rest > 0 and (rest >= min_fraction * window_frames or not starts):
        starts.append(len(starts) * window_frames)
    out = np.full((len(starts), mel.shape[0], window_frames), pad_value, dtype=np.float32)
    for w, s in enumerate(starts):
        piece = mel[:, s : s + window_frames]
        out[w, :, : piece.shape[1]] = piece
    return out
