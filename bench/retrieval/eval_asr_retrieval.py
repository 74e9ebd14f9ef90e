"""Lyrics <-> audio retrieval through the chant recogniser, under the issue-6 protocol.

audio embedding  = f(audio): the recogniser's greedy transcript of the clip, as a character n-gram
                   TF-IDF vector (or its MiniLM embedding); nothing of the song's lyrics goes in.
lyrics embedding = g(lyrics): the same vectoriser applied to the lyrics text.
Gallery = the test split of each protocol seed (0, 1, 2), one clip per work (songbook: the piano clip,
as in lyric2vec_models.evaluation; held-out: the FluidR3 / choir-flute-clarinet / "+m3" re-rendering).
Ties broken at random (lyric2vec_models.metrics); random baseline beside every figure.

    .venv/bin/python bench/retrieval/eval_asr_retrieval.py [--model OUT/asr.safetensors]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from common import HOME, OUT, SEEDS, catalogue, protocol_splits, recogniser_leakage  # noqa: E402

from lyric2vec_models.asr import ChantRecogniser, cer, transcribe  # noqa: E402
from lyric2vec_models.chant_data import normalise_chars  # noqa: E402
from lyric2vec_models.metrics import retrieval_metrics  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
KEYS = ("recall@1", "recall@5", "recall@10", "mrr", "median_rank")


def songbook_gallery_mels(track_ids: list[str]) -> np.ndarray:
    """The gallery clip of each track: its piano clip (the songbook's first program), window 0."""
    out = {}
    for part in sorted((HOME / "spectrograms").glob("songbook-*")):
        clips = pl.read_parquet(part / "clips.parquet").filter(
            (pl.col("program_name") == "piano") & (pl.col("window") == 0))  # fmt: skip
        want = clips.filter(pl.col("track_id").is_in(track_ids))
        if len(want):
            mels = np.load(part / "mels.npy", mmap_mode="r")
            for tid, row in zip(want["track_id"], want["row"], strict=True):
                out[tid] = np.asarray(mels[row])
    return np.stack([out[t] for t in track_ids])


def heard_text(cat: pl.DataFrame, seconds: float = 30.0) -> dict[str, str]:
    """What a perfect recogniser would hear in a 30-s clip: first-verse words with onsets inside it."""
    import glob

    words = pl.concat([pl.read_parquet(p, columns=["track_id", "words"])
                       for p in sorted(glob.glob(str(HOME / "lyrics" / "*.parquet")))])  # fmt: skip
    out = {}
    for tid, ws in zip(words["track_id"].to_list(), words["words"].to_list(), strict=True):
        if not ws:
            continue
        v0 = ws[0]["verse"]
        out[tid] = normalise_chars(
            " ".join(w["word"] for w in ws if w["verse"] == v0 and w["onset_s"] < seconds - 0.15)
        )
    return out


def tfidf_vectors(fit_texts, lyrics, transcripts, analyzer="char_wb", ngram=(2, 4)):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram, sublinear_tf=True)
    vec.fit([normalise_chars(t) for t in fit_texts])
    lyr = vec.transform([normalise_chars(t) for t in lyrics]).toarray()
    aud = vec.transform(list(transcripts)).toarray()
    n = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    return n(lyr), n(aud)


_MINILM = {}


def minilm(texts: list[str]) -> np.ndarray:
    from lyric2vec_models.text import TextEncoder

    if "enc" not in _MINILM:
        _MINILM["enc"] = TextEncoder(progress=False)
    z = _MINILM["enc"].encode(list(texts))
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def directions(lyr: np.ndarray, aud: np.ndarray, seed: int) -> dict:
    idx = np.arange(len(lyr))
    return {"lyrics->audio": retrieval_metrics(lyr, aud, idx, seed=seed),
            "audio->lyrics": retrieval_metrics(aud, lyr, idx, seed=seed)}  # fmt: skip


def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for d in ("lyrics->audio", "audio->lyrics"):
        out[d] = {k: {"mean": float(np.mean([r[d][k] for r in per_seed])),
                      "std": float(np.std([r[d][k] for r in per_seed], ddof=1))} for k in KEYS}  # fmt: skip
        out[d]["random_recall@10"] = float(np.mean([r[d]["random"]["recall@10"] for r in per_seed]))
        out[d]["gallery"] = [r[d]["gallery_size"] for r in per_seed]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(OUT / "asr.safetensors"))
    ap.add_argument("--tag", default="asr")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cat = catalogue()
    splits = protocol_splits(cat)
    tids = cat["track_id"].to_list()
    lyrics = dict(zip(tids, cat["lyrics"].to_list(), strict=True))
    test_any = sorted({t for s in splits.values() for t, x in zip(tids, s, strict=True) if x == "test"})
    model = ChantRecogniser()
    model.load_state_dict(load_file(args.model))
    heard = heard_text(cat)

    corpora = {"songbook": (test_any, songbook_gallery_mels(test_any))}
    hp = OUT / "heldout_render" / "mels.npy"
    if hp.exists():
        meta = json.loads((OUT / "heldout_render" / "tracks.json").read_text())
        corpora["heldout_rerender"] = (meta["tracks"], np.load(hp))
    report = {"model": args.model, "leakage": recogniser_leakage(cat, splits), "corpora": {}}
    print("recogniser text vs val/test:", report["leakage"])
    for name, (ids, mels) in corpora.items():
        hyp = dict(zip(ids, transcribe(model, mels), strict=True))
        (OUT / f"transcripts_{name}_{args.tag}.json").write_text(
            json.dumps(hyp, indent=0, ensure_ascii=False)
        )
        c = cer([hyp[t] for t in ids], [heard[t] for t in ids])
        c_med = float(
            np.median([cer([hyp[t]], [heard[t]]) for t in ids])
        )  # robust to a few hallucinating clips
        methods = {}
        for seed in SEEDS:
            s = dict(zip(tids, splits[seed], strict=True))
            test = [t for t in tids if s[t] == "test" and lyrics[t] and t in hyp]
            train_texts = [lyrics[t] for t in tids if s[t] == "train" and lyrics[t]]
            L, H, oracle = [lyrics[t] for t in test], [hyp[t] for t in test], [heard[t] for t in test]
            first = [lyrics[t].split("\n")[0] for t in test]
            runs = {
                "tfidf_char2-4_full_lyrics": tfidf_vectors(train_texts, L, H),
                "tfidf_char2-4_first_verse": tfidf_vectors(train_texts, first, H),
                "tfidf_char3-5_first_verse": tfidf_vectors(train_texts, first, H, ngram=(3, 5)),
                "tfidf_word_first_verse": tfidf_vectors(train_texts, first, H, analyzer="word", ngram=(1, 1)),
                "minilm_full_lyrics": (minilm(L), minilm(H)),
                "oracle_transcript_tfidf_char2-4_first_verse": tfidf_vectors(train_texts, first, oracle),
            }
            for m, (lyr, aud) in runs.items():
                methods.setdefault(m, []).append(directions(lyr, aud, seed))
        report["corpora"][name] = {"n_clips": len(ids), "cer_vs_heard_words": c, "median_clip_cer": c_med,
                                   "methods": {m: {"summary": summarise(v), "per_seed": v} for m, v in methods.items()}}  # fmt: skip
        print(
            f"\n== {name}: {len(ids)} clips, CER vs heard first-verse words {c:.3f} (median clip {c_med:.3f})"
        )
        for m, v in methods.items():
            sm = summarise(v)
            print(f"{m:45s} " + "  ".join(
                f"{d}: R@1 {sm[d]['recall@1']['mean']:.3f} R@10 {sm[d]['recall@10']['mean']:.3f}±{sm[d]['recall@10']['std']:.3f} "
                f"MRR {sm[d]['mrr']['mean']:.3f} medR {sm[d]['median_rank']['mean']:.1f} (rand R@10 {sm[d]['random_recall@10']:.3f})"
                for d in ("lyrics->audio", "audio->lyrics")))  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"retrieval_{args.tag}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
