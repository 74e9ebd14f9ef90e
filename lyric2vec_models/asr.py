"""A small CTC character recogniser for the songbook's chanted voice: CNN + BiGRU over log-mel.

Input: the project's log-mel (SpectrogramSpec: 64 bins, 43 frames/s), (B, 64, T). Output: per-frame
log-probabilities over the CTC blank (0) and `ALPHABET` (1..28). Pure torch. Its training data is generated
by lyric2vec_pipeline.songbook.chant; training, saving and loading are here (`train_recogniser`).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"  # index 0 is the CTC blank, so chars map to 1..len
_KEEP = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


def normalise_chars(text: str) -> str:
    """Lyrics -> the recogniser's alphabet: accents stripped, ß -> ss, lower case, single spaces."""
    t = unicodedata.normalize("NFKD", text.replace("ß", "ss").replace("’", "'")).casefold()
    t = "".join(c for c in t if not unicodedata.combining(c))
    t = _KEEP.sub(" ", t)
    return _SPACES.sub(" ", t).strip()


def encode_chars(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in normalise_chars(text)]


def decode_ids(ids: Sequence[int]) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if 0 < i <= len(ALPHABET))


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


# ---------------------------------------------------------------- training, saving, loading

WEIGHTS_FILE = "weights.safetensors"


def train_recogniser(
    mels: np.ndarray,
    labels: Sequence[str],
    heldout_mels: np.ndarray,
    heldout_labels: Sequence[str],
    *,
    max_steps: int = 10_000,
    max_seconds: float = 480.0,
    batch: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    eval_every: int = 100,
    progress: bool = True,
    log=None,
) -> tuple[ChantRecogniser, dict]:
    """CTC training on generated (log-mel, text) pairs until `max_steps` or `max_seconds`, whichever first.

    Learning rate: linear warm-up over 100 steps, then cosine decay over the budget (the fraction of steps or
    of seconds used, whichever is further). Character error rate on the held-out generated set is measured
    every `eval_every` steps and at the end. Returns the model (eval mode) and its history.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ChantRecogniser()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    targets_all = [encode_chars(t) or [ALPHABET.index(" ") + 1] for t in labels]
    t0 = time.perf_counter()
    history: list[dict] = []
    step, loss_sum, loss_n = 0, 0.0, 0

    def evaluate() -> float:
        hyp = transcribe(model, heldout_mels) if len(heldout_labels) else []
        return cer(hyp, list(heldout_labels)) if hyp else float("nan")

    # The budget that ends training is usually time: the bar shows seconds of it, the step count beside.
    bar = tqdm(total=round(max_seconds), desc="chant recogniser", unit="s", disable=not progress)
    while step < max_steps and time.perf_counter() - t0 < max_seconds:
        frac = max(step / max_steps, (time.perf_counter() - t0) / max_seconds)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        idx = rng.choice(len(labels), min(batch, len(labels)), replace=False)
        x = spec_augment(torch.as_tensor(np.stack([mels[i] for i in idx]).astype(np.float32)), rng)
        model.train()
        loss = ctc_loss(model(x), [targets_all[i] for i in idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.n = min(round(time.perf_counter() - t0), bar.total)
        bar.set_postfix_str(f"step {step}", refresh=step % 10 == 0)
        if step % eval_every == 0:
            c = evaluate()
            history.append({"step": step, "seconds": round(time.perf_counter() - t0, 1),
                            "loss": loss_sum / loss_n, "heldout_cer": c})  # fmt: skip
            loss_sum, loss_n = 0.0, 0
            bar.set_postfix_str(f"step {step}, loss {history[-1]['loss']:.3f}, held-out CER {c:.3f}")
            if log is not None:
                log.info(f"step {step}: loss {history[-1]['loss']:.3f}, held-out CER {c:.3f}")
    bar.close()
    final_cer = evaluate()
    if not history or history[-1]["step"] != step:
        history.append({"step": step, "seconds": round(time.perf_counter() - t0, 1),
                        "loss": loss_sum / max(loss_n, 1), "heldout_cer": final_cer})  # fmt: skip
    model.eval()
    return model, {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "heldout_cer": final_cer,
                   "train_clips": len(labels), "heldout_clips": len(heldout_labels), "batch": batch, "lr": lr,
                   "seed": seed, "history": history}  # fmt: skip


def save_recogniser(model: ChantRecogniser, directory: str | Path, info: dict) -> Path:
    """weights.safetensors + manifest.json (hashes, training info), written to a temp dir and renamed."""
    from safetensors.torch import save_file

    from lyric2vec_models.artifacts import atomic_dir, file_entry, write_json_atomic

    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        entry = file_entry(tmp / WEIGHTS_FILE)
        version = f"chant-{entry['sha256'][:12]}"
        write_json_atomic(tmp / "manifest.json", {"version": version, "alphabet": ALPHABET,
                                                  "files": {WEIGHTS_FILE: entry}, **info})  # fmt: skip
    return directory


def load_recogniser(directory: str | Path) -> tuple[ChantRecogniser, dict]:
    """(model in eval mode, manifest); ArtifactError naming the file when it is missing or does not match."""
    from safetensors.torch import load_file

    from lyric2vec_models.artifacts import ArtifactError, read_json, verify_files

    directory = Path(directory)
    manifest = read_json(directory / "manifest.json")
    verify_files(directory, manifest["files"])
    if manifest.get("alphabet") != ALPHABET:
        raise ArtifactError(f"{directory / 'manifest.json'}: trained for another alphabet")
    model = ChantRecogniser()
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval(), manifest
