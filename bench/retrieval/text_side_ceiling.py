"""How good must the recogniser be? Retrieval from simulated transcripts of the 30-s clips.

The words really sung in each clip (first-verse words with onsets inside it) are degraded: only a fraction
of its words kept, or characters substituted/deleted at a rate p (about the CER), then matched to the test
lyrics' first verse with the report's char 2-4-gram TF-IDF (lyric2vec_models.lyrics_match). 3 protocol seeds.

    .venv/bin/python bench/retrieval/text_side_ceiling.py [--home artifacts]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np

from lyric2vec_models.lyrics_match import TranscriptMatcher, both_directions, first_verse, heard_text
from lyric2vec_pipeline.assets.recogniser import (
    PROTOCOL_SEEDS,
    protocol_splits,
    read_words,
    songbook_catalogue,
)
from lyric2vec_pipeline.resources import LyricHome

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=os.environ.get("LYRIC2VEC_HOME", "artifacts"))
    args = ap.parse_args()
    home = LyricHome(home=args.home)
    cat = songbook_catalogue(home)
    splits = protocol_splits(cat, PROTOCOL_SEEDS)
    tids = cat["track_id"].to_list()
    lyrics = dict(zip(tids, cat["lyrics"].to_list(), strict=True))
    words = read_words(home)
    heard = {t: heard_text(words.get(t), 30.0) for t in tids}
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
        for seed, split in splits.items():
            test = [t for t, s in zip(tids, split, strict=True) if s == "test" and lyrics[t]]
            matcher = TranscriptMatcher([lyrics[t] for t, s in zip(tids, split, strict=True) if s == "train" and lyrics[t]])
            d = both_directions(matcher.vectors([first_verse(lyrics[t]) for t in test]),
                                matcher.vectors([f(heard[t]) for t in test]), seed)  # fmt: skip
            r10.append([d["lyrics->audio"]["recall@10"], d["audio->lyrics"]["recall@10"]])
        m, sd = np.mean(r10, 0), np.std(r10, 0, ddof=1)
        out[name] = {"lyrics->audio_recall@10": [float(m[0]), float(sd[0])],
                     "audio->lyrics_recall@10": [float(m[1]), float(sd[1])]}  # fmt: skip
        print(f"{name:22s} lyrics->audio R@10 {m[0]:.3f}±{sd[0]:.3f}  audio->lyrics R@10 {m[1]:.3f}±{sd[1]:.3f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrieval_text_side_ceiling.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
