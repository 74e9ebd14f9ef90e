"""Which matcher turns transcripts into the best lyrics<->audio retrieval? Same protocol, same transcripts.

Reads a home where `make eval` built lyrics_retrieval_report.json (it stores the chant recogniser's transcript
of every clip of both corpora) and scores other matchers of transcript vs lyrics over the 3 protocol seeds:
char n-gram TF-IDF (2-4 on full lyrics = the report's main row; 2-4 and 3-5 on the first verse), word unigram
TF-IDF, and MiniLM sentence embeddings. Writes bench/results/retrieval_matchers.json.

    .venv/bin/python bench/retrieval/matchers.py [--home artifacts]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from lyric2vec_models.lyrics_match import TranscriptMatcher, both_directions, first_verse, summarise
from lyric2vec_pipeline.assets.recogniser import (
    PROTOCOL_SEEDS,
    load_lyrics_report,
    protocol_splits,
    songbook_catalogue,
)
from lyric2vec_pipeline.resources import LyricHome

RESULTS = Path(__file__).resolve().parents[1] / "results"
TIE_SEED = 0  # as the lyrics_retrieval_report asset (its default config)


def minilm(texts: list[str]) -> np.ndarray:
    from lyric2vec_models.text import TextEncoder

    if not hasattr(minilm, "enc"):
        minilm.enc = TextEncoder(progress=False)
    z = minilm.enc.encode(list(texts))
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=os.environ.get("LYRIC2VEC_HOME", "artifacts"))
    args = ap.parse_args()
    home = LyricHome(home=args.home)
    report = load_lyrics_report(home)
    cat = songbook_catalogue(home)
    tids = cat["track_id"].to_list()
    lyrics = dict(zip(tids, cat["lyrics"].to_list(), strict=True))
    splits = protocol_splits(cat, PROTOCOL_SEEDS)
    out = {"recogniser_version": report["recogniser_version"], "corpora": {}}
    for corpus, transcripts in report["transcripts"].items():
        runs: dict[str, list] = {}
        for split in splits.values():
            test = [t for t, s in zip(tids, split, strict=True) if s == "test" and lyrics[t] and t in transcripts]
            train = [lyrics[t] for t, s in zip(tids, split, strict=True) if s == "train" and lyrics[t]]
            full, first, hyp = [lyrics[t] for t in test], [first_verse(lyrics[t]) for t in test], [transcripts[t] for t in test]
            variants = {
                "tfidf char2-4 / full lyrics": (TranscriptMatcher(train), full),
                "tfidf char2-4 / first verse": (TranscriptMatcher(train), first),
                "tfidf char3-5 / first verse": (TranscriptMatcher(train, ngram=(3, 5)), first),
                "tfidf word / first verse": (TranscriptMatcher(train, ngram=(1, 1), analyzer="word"), first),
            }
            for name, (m, texts) in variants.items():
                runs.setdefault(name, []).append(both_directions(m.vectors(texts), m.vectors(hyp), TIE_SEED))
            runs.setdefault("MiniLM / full lyrics", []).append(both_directions(minilm(full), minilm(hyp), TIE_SEED))
        out["corpora"][corpus] = {name: summarise(v) for name, v in runs.items()}
        print(f"\n{corpus}")
        for name, s in out["corpora"][corpus].items():
            print(f"  {name:30s} " + "  ".join(
                f"{d} R@1 {s[d]['recall@1']['mean']:.3f} R@10 {s[d]['recall@10']['mean']:.3f}±{s[d]['recall@10']['std']:.3f}"
                for d in ("lyrics->audio", "audio->lyrics")) + f"  (random R@10 {s['lyrics->audio']['random_recall@10']:.3f})")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retrieval_matchers.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'retrieval_matchers.json'}")


if __name__ == "__main__":
    main()
