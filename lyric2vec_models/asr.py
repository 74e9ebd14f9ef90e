"""A small CTC character recogniser for the songbook's chanted voice: CNN + BiGRU over log-mel.

Input: the project's log-mel (SpectrogramSpec: 64 bins, 43 frames/s), (B, 64, T). Output: per-frame
log-probabilities over the CTC blank (0) and `chant_data.ALPHABET` (1..28). Pure torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lyric2vec_models.chant_data import ALPHABET, decode_ids

N_CLASSES = len(ALPHABET) + 1


def normalise_mel(mel: torch.Tensor) -> torch.Tensor:
    """Per-clip standardisation of (B, n_mels, T) log-mel: levels and mix gains do not matter."""
    mu = mel.mean(dim=(1, 2), keepdim=True)
    sd = mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
    return (mel - mu) / sd


class ChantRecogniser(nn.Module):
    """Two strided 2-D convolutions (time /2: 21.5 frames/s, enough for chanted text at <= 10 chars/s),
    then a bidirectional GRU and a per-frame character classifier."""

    def __init__(
        self, n_mels: int = 64, channels: int = 32, hidden: int = 160, layers: int = 2, dropout: float = 0.1
    ):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=(2, 2), padding=1), nn.BatchNorm2d(channels), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1), nn.BatchNorm2d(channels), nn.GELU(),
        )  # fmt: skip
        self.proj = nn.Linear(channels * ((n_mels + 3) // 4), 192)
        self.rnn = nn.GRU(
            192, hidden, layers, batch_first=True, bidirectional=True, dropout=dropout if layers > 1 else 0.0
        )
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, N_CLASSES)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log-mel -> (B, ceil(T / 2), N_CLASSES) log-probabilities."""
        x = self.conv(normalise_mel(mel).unsqueeze(1))  # (B, C, n_mels/4, T/2)
        b, c, f, t = x.shape
        x = self.proj(x.permute(0, 3, 1, 2).reshape(b, t, c * f))
        x, _ = self.rnn(self.drop(torch.nn.functional.gelu(x)))
        return self.out(self.drop(x)).log_softmax(-1)


def ctc_loss(log_probs: torch.Tensor, targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean CTC loss (per target character) of (B, T, C) log-probs against variable-length targets."""
    b, t, _ = log_probs.shape
    lengths = torch.tensor([len(x) for x in targets], dtype=torch.long)
    flat = torch.tensor([c for x in targets for c in x], dtype=torch.long)
    return nn.functional.ctc_loss(
        log_probs.transpose(0, 1), flat, torch.full((b,), t, dtype=torch.long), lengths,
        blank=0, reduction="mean", zero_infinity=True,
    )  # fmt: skip


def greedy_ids(log_probs: np.ndarray | torch.Tensor) -> list[int]:
    """(T, C) -> best path with repeats collapsed and blanks dropped."""
    best = np.asarray(torch.as_tensor(log_probs).argmax(-1))
    out, prev = [], -1
    for k in best.tolist():
        if k != prev and k != 0:
            out.append(k)
        prev = k
    return out


def greedy_decode(log_probs: np.ndarray | torch.Tensor) -> str:
    return decode_ids(greedy_ids(log_probs))


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Character error rate: total edits / total reference characters."""
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True)) / max(
        1, sum(len(r) for r in refs)
    )


@torch.no_grad()
def transcribe(model: ChantRecogniser, mels: np.ndarray, batch: int = 16) -> list[str]:
    """(N, n_mels, T) log-mels -> greedy transcripts (model put in eval mode)."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(mels), batch):
        lp = model(torch.as_tensor(np.asarray(mels[i : i + batch], dtype=np.float32)))
        out += [greedy_decode(x) for x in lp]
    return out


def spec_augment(
    mel: torch.Tensor, rng: np.random.Generator, freq: int = 8, time: int = 10, masks: int = 2
) -> torch.Tensor:
    """Zero-mean-ish masking of random mel bands and time spans (in the log domain: set to the clip min)."""
    mel = mel.clone()
    floor = mel.amin(dim=(1, 2))
    for i in range(mel.shape[0]):
        for _ in range(masks):
            f0, fw = int(rng.integers(0, mel.shape[1])), int(rng.integers(0, freq + 1))
            mel[i, f0 : f0 + fw, :] = floor[i]
            t0, tw = int(rng.integers(0, mel.shape[2])), int(rng.integers(0, time + 1))
            mel[i, :, t0 : t0 + tw] = floor[i]
    return mel
