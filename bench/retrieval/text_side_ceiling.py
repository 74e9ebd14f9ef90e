"""How good must the recogniser be? Retrieval from simulated transcripts of the 30-s clips.

The "heard" text (first-verse words with onsets inside the clip) is degraded: only a fraction of
its words kept, or characters substituted/deleted at a rate p (about the CER), then matched to the
test lyrics' first verse with the char 2-4-gram TF-IDF of eval_asr_retrieval. 3 protocol seeds.

    .venv/bin/python bench/retrieval/text_side_ceiling.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SEEDS, catalogue, protocol_splits  # noqa: E402
from eval_asr_retrieval import RESULTS, directions, heard_text, tfidf_vectors  # noqa: E402


def main() -> None:
    cat = catalogue()
    splits = protocol_splits(cat)
    tids = cat["track_id"].to_list()
    lyrics = dict(zip(tids, cat["lyrics"].to_list(), strict=True))
    heard = heard_text(cat)
    rng = random.Random(0)

    def keep_words(t: str, keep: float) -> str:
        return " ".join(w for w in t.split() if rng.random() < keep)

    def noisy(t: str, p: float) -> str:
        out = []
        for c in t:
            r = rng.random()
            if r < p / 2:
                continue
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz ") if r < p else c)
        return "".join(out)

    variants = {"perfect transcript": lambda t: t}
    variants |= {f"{int(k * 100)}% of words": (lambda t, k=k: keep_words(t, k)) for k in (0.5, 0.25, 0.1)}
    variants |= {f"char noise p={p}": (lambda t, p=p: noisy(t, p)) for p in (0.3, 0.5, 0.6, 0.7)}
    out = {}
    for name, f in variants.items():
        r10 = []
        for seed in SEEDS:
            s = dict(zip(tids, splits[seed], strict=True))
            test = [t for t in tids if s[t] == "test" and lyrics[t]]
            train = [lyrics[t] for t in tids if s[t] == "train" and lyrics[t]]
            lyr, aud = tfidf_vectors(
                train, [lyrics[t].split("\n")[0] for t in test], [f(heard[t]) for t in test]
            )
            d = directions(lyr, aud, seed)
            r10.append([d["lyrics->audio"]["recall@10"], d["audio->lyrics"]["recall@10"]])
        m, sd = np.mean(r10, 0), np.std(r10, 0, ddof=1)
        out[name] = {"lyrics->audio_recall@10": [float(m[0]), float(sd[0])],
                     "audio->lyrics_recall@10": [float(m[1]), float(sd[1])]}  # fmt: skip
        print(
            f"{name:22s} lyrics->audio R@10 {m[0]:.3f}±{sd[0]:.3f}  audio->lyrics R@10 {m[1]:.3f}±{sd[1]:.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrieval_text_side_ceiling.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
