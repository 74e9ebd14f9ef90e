"""Train the chant recogniser (CTC, characters) on generated shards for a wall-clock budget.

    .venv/bin/python bench/retrieval/train_asr.py --minutes 30
Reads OUT/chant/train_*.npy as they appear (the generator may still be writing), reports CER on the
held-out generated set (other seeds) and writes OUT/asr.safetensors and bench/results/retrieval_asr_train.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT  # noqa: E402

from lyric2vec_models.artifacts import atomic_path  # noqa: E402
from lyric2vec_models.asr import ChantRecogniser, cer, ctc_loss, spec_augment, transcribe  # noqa: E402
from lyric2vec_models.chant_data import encode_chars  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def load(pattern: str):
    mels, labels = [], []
    for p in sorted(glob.glob(str(OUT / "chant" / pattern))):
        if p.endswith(".tmp.npy"):
            continue
        mels.append(np.load(p, mmap_mode="r"))
        labels += json.loads(Path(p[:-4] + ".json").read_text())
    return (np.concatenate(mels) if mels else np.zeros((0,))), labels


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Weights as safetensors (never a pickle), written to a temp file and renamed."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)  # 2 threads ran 10x slower on the shared 2 cores
    ap.add_argument("--eval-every", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    hmels, hlabels = load("heldout_*.npy")
    model = ChantRecogniser()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    deadline = time.time() + args.minutes * 60
    start = time.time()

    def lr_at() -> float:  # warm-up then cosine decay over the wall-clock budget
        frac = (time.time() - start) / (deadline - start)
        return args.lr * min(1.0, step / 100) * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))

    mels, labels = load("train_*.npy")
    history, step, t0 = [], 0, time.time()
    while time.time() < deadline:
        if step % 100 == 0:
            mels, labels = load("train_*.npy")  # pick up new shards
        idx = rng.choice(len(labels), args.batch, replace=False)
        x = torch.as_tensor(np.stack([mels[i] for i in idx]).astype(np.float32))
        x = spec_augment(x, rng)
        targets = [encode_chars(labels[i]) or [1] for i in idx]
        model.train()
        loss = ctc_loss(model(x), targets)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        for g in opt.param_groups:
            g["lr"] = lr_at()
        opt.step()
        step += 1
        if step % 20 == 0:
            print(
                f"step {step} loss {loss.item():.3f} clips {len(labels)} {time.time() - t0:.0f}s", flush=True
            )
        if step % args.eval_every == 0 or time.time() >= deadline:
            hyp = transcribe(model, hmels[:128])
            c = cer(hyp, hlabels[:128])
            history.append({"step": step, "seconds": round(time.time() - t0), "loss": float(loss), "cer": c,
                            "train_clips": len(labels)})  # fmt: skip
            print(f"== step {step} heldout CER {c:.3f} | {hyp[0]!r} vs {hlabels[0]!r}", flush=True)
            save_weights(model, OUT / "asr.safetensors")
    hyp = transcribe(model, hmels)
    final = {"steps": step, "seconds": round(time.time() - t0), "train_clips_seen_pool": len(labels),
             "heldout_generated_clips": len(hlabels), "heldout_cer": cer(hyp, hlabels), "history": history,
             "examples": [{"ref": r, "hyp": h} for r, h in zip(hlabels[:5], hyp[:5], strict=True)]}  # fmt: skip
    save_weights(model, OUT / "asr.safetensors")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrieval_asr_train.json").write_text(json.dumps(final, indent=1))
    print(json.dumps({k: v for k, v in final.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
