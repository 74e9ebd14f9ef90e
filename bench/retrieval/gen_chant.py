"""Write generated (text, chanted audio) log-mel shards: OUT/chant/<name>_<k>.npy + .json labels.

.venv/bin/python bench/retrieval/gen_chant.py --name train --start 0 --n 12000 --shard 800
.venv/bin/python bench/retrieval/gen_chant.py --name heldout --start 1000000 --n 256 --shard 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, text_source  # noqa: E402

from lyric2vec_models.chant_data import ChantConfig, generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="train")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--n", type=int, default=12000)
    ap.add_argument("--shard", type=int, default=800)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    out = OUT / "chant"
    out.mkdir(parents=True, exist_ok=True)
    src, cfg = text_source(), ChantConfig()
    for k, s0 in enumerate(range(args.start, args.start + args.n, args.shard)):
        path = out / f"{args.name}_{k:03d}.npy"
        if path.exists():
            continue
        t0 = time.time()
        mels, labels = [], []
        for m, lab in generate(
            list(range(s0, s0 + args.shard)), src, cfg, batch=16, workers=args.workers, as_mel=True
        ):
            mels += m
            labels += lab
        np.save(out / f"{args.name}_{k:03d}.tmp.npy", np.stack(mels))
        (out / f"{args.name}_{k:03d}.json").write_text(json.dumps(labels))
        (out / f"{args.name}_{k:03d}.tmp.npy").rename(path)
        dt = time.time() - t0
        print(
            f"{path.name}: {len(mels)} clips of {cfg.seconds:.0f} s in {dt:.0f} s "
            f"({len(mels) / dt:.2f} clips/s, {len(mels) * cfg.seconds / dt:.0f}x real time)",
            flush=True,
        )


if __name__ == "__main__":
    main()
