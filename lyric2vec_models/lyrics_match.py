"""Lyrics <-> audio retrieval through transcripts, under the fixed protocol of issue 6.

audio vector  = f(audio alone): the chant recogniser's greedy transcript of the clip (lyric2vec_models.asr),
                as an L2-normalised character n-gram TF-IDF vector;
lyrics vector = g(lyrics alone): the same vectoriser on the lyrics text.
The vectoriser's vocabulary and IDF are fitted on the training split's lyrics of each split seed only.
Gallery = the test split of each protocol seed, one clip per work; Recall@1/5/10, MRR and median rank in both
directions with ties broken at random and the exact random baseline (lyric2vec_models.metrics); the mean and
sample std over the seeds. No fused vector is involved, so nothing of a song's own lyrics is on the audio side.

Rows of a report (`METHODS`):
    transcript / full lyrics   the query or gallery text is the song's whole lyrics (what a user has)
    transcript / first verse   only the first verse: the part a 30-s clip from the start can contain
    perfect transcript         the words really sung in the clip instead of the recogniser's output: the ceiling
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lyric2vec_models.asr import normalise_chars
from lyric2vec_models.metrics import retrieval_metrics
from lyric2vec_models.splits import near_duplicate_pairs, normalise_text

METHODS = ("transcript / full lyrics", "transcript / first verse", "perfect transcript / first verse")
DIRECTIONS = ("lyrics->audio", "audio->lyrics")
KEYS = ("recall@1", "recall@5", "recall@10", "mrr", "median_rank")


def heard_text(words: Sequence[Mapping] | None, seconds: float) -> str:
    """The words a perfect recogniser hears in a clip of `seconds` from the start: first-verse words whose
    onset is inside it. `words`: the lyrics asset's word list ({"word", "verse", "onset_s"})."""
    if not words:
        return ""
    v0 = words[0]["verse"]
    return normalise_chars(
        " ".join(w["word"] for w in words if w["verse"] == v0 and w["onset_s"] < seconds - 0.15)
    )


def first_verse(lyrics: str) -> str:
    return lyrics.split("\n")[0]


class TranscriptMatcher:
    """Character 2-4-gram TF-IDF (within word boundaries, sublinear tf) over the recogniser's alphabet."""

    def __init__(self, fit_texts: Sequence[str], ngram: tuple[int, int] = (2, 4), analyzer: str = "char_wb"):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectoriser = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram, sublinear_tf=True)
        self.vectoriser.fit([normalise_chars(t) for t in fit_texts])

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) texts -> (N, V) float32, L2-normalised (an empty text gives a zero row: it ranks at random)."""
        z = self.vectoriser.transform([normalise_chars(t) for t in texts]).toarray().astype(np.float32)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def recogniser_text_mask(splits: Mapping[int, np.ndarray], lyrics: Sequence[str | None]) -> np.ndarray:
    """Tracks in the TRAIN split of every protocol seed (and with lyrics): the only texts the recogniser's
    generated training data may chant, so no text of any seed's val or test split is ever heard in training."""
    mask = np.array([t is not None for t in lyrics])
    for s in splits.values():
        mask &= np.asarray(s) == "train"
    return mask


def recogniser_leakage(
    splits: Mapping[int, np.ndarray], lyrics: Sequence[str | None], mask: np.ndarray
) -> dict:
    """Per seed: distinct recogniser texts equal to a val/test text, and near-duplicate pairs joining a
    recogniser text to a val/test text. Both must be 0."""
    rec = {normalise_text(t) for t, m in zip(lyrics, mask, strict=True) if m}
    pairs = near_duplicate_pairs(list(lyrics))
    out: dict = {"recogniser_tracks": int(mask.sum()), "recogniser_distinct_texts": len(rec)}
    for seed, split in splits.items():
        split = np.asarray(split)
        held = {normalise_text(t) for t, x in zip(lyrics, split, strict=True) if x != "train" and t}
        near = sum(bool((mask[i] and split[j] != "train") or (mask[j] and split[i] != "train")) for i, j in pairs)
        out[f"seed{seed}"] = {"shared_texts": len(rec & held), "near_duplicate_pairs": int(near)}
    return out


def both_directions(lyr: np.ndarray, aud: np.ndarray, tie_seed: int) -> dict:
    idx = np.arange(len(lyr))
    return {"lyrics->audio": retrieval_metrics(lyr, aud, idx, seed=tie_seed),
            "audio->lyrics": retrieval_metrics(aud, lyr, idx, seed=tie_seed)}  # fmt: skip


def summarise(per_seed: Sequence[dict]) -> dict:
    out = {}
    for d in DIRECTIONS:
        runs = [r[d] for r in per_seed]
        out[d] = {k: {"mean": float(np.mean([r[k] for r in runs])),
                      "std": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0} for k in KEYS}  # fmt: skip
        out[d]["random_recall@10"] = float(np.mean([r["random"]["recall@10"] for r in runs]))
        out[d]["gallery"] = [int(r["gallery_size"]) for r in runs]
    return out


def corpus_report(
    track_ids: Sequence[str],
    lyrics: Mapping[str, str | None],
    transcripts: Mapping[str, str],
    heard: Mapping[str, str],
    splits: Mapping[int, np.ndarray],
    tie_seed: int = 0,
) -> dict:
    """The protocol on one corpus. `track_ids` orders `splits` (seed -> split per track); `transcripts` holds
    the recogniser's output for every clip of this corpus (track_id -> text); `heard` what was really sung."""
    per_method: dict[str, list] = {m: [] for m in METHODS}
    for seed, split in splits.items():
        test = [t for t, s in zip(track_ids, split, strict=True) if s == "test" and lyrics.get(t) and t in transcripts]
        train_texts = [lyrics[t] for t, s in zip(track_ids, split, strict=True) if s == "train" and lyrics.get(t)]
        if len(test) < 2:
            raise ValueError(f"split seed {seed}: {len(test)} test works with lyrics and a clip; need at least 2")
        matcher = TranscriptMatcher(train_texts)
        full = matcher.vectors([lyrics[t] for t in test])
        first = matcher.vectors([first_verse(lyrics[t]) for t in test])
        hyp = matcher.vectors([transcripts[t] for t in test])
        perfect = matcher.vectors([heard.get(t, "") for t in test])
        for method, (lyr, aud) in zip(METHODS, [(full, hyp), (first, hyp), (first, perfect)], strict=True):
            per_method[method].append({"split_seed": seed, **both_directions(lyr, aud, tie_seed)})
    from lyric2vec_models.asr import cer

    ids = [t for t in track_ids if t in transcripts and heard.get(t)]
    return {
        "n_clips": len(transcripts),
        "cer_vs_sung_words": cer([transcripts[t] for t in ids], [heard[t] for t in ids]) if ids else None,
        "median_clip_cer": float(np.median([cer([transcripts[t]], [heard[t]]) for t in ids])) if ids else None,
        "methods": {m: {"summary": summarise(v), "per_seed": v} for m, v in per_method.items()},
    }


def format_lyrics_report(report: dict, goal: float = 0.75) -> str:
    """Markdown: one table per corpus, mean ± std over the split seeds, random baseline beside."""
    lines = [f"**Lyrics <-> audio through the chant recogniser** {report.get('recogniser_version', '?')} "
             f"(split seeds {report.get('split_seeds')}; recogniser texts vs val/test: "
             f"{report.get('leakage_summary', '?')})"]  # fmt: skip
    corpora = report["corpora"]  # songbook first, then the held-out corpora (JSON round trips sort keys)
    for name in sorted(corpora, key=lambda n: (n != "songbook", n)):
        corpus = corpora[name]
        c = corpus.get("cer_vs_sung_words")
        lines += ["", f"*{name}*: {corpus['n_clips']} clips, transcript CER vs the sung words "
                      f"{'-' if c is None else f'{c:.3f}'}", "",
                  "| method | direction | R@1 | R@5 | R@10 | MRR | median rank | gallery | random R@10 |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for method in [m for m in METHODS if m in corpus["methods"]]:
            v = corpus["methods"][method]
            for d in DIRECTIONS:
                s = v["summary"][d]
                lines.append(
                    f"| {method} | {d} | {s['recall@1']['mean']:.3f} | {s['recall@5']['mean']:.3f} | "
                    f"{s['recall@10']['mean']:.3f} ± {s['recall@10']['std']:.3f} | {s['mrr']['mean']:.3f} | "
                    f"{s['median_rank']['mean']:.1f} | {'/'.join(map(str, s['gallery']))} | {s['random_recall@10']:.3f} |"
                )
    main = report["corpora"].get("songbook", {}).get("methods", {}).get(METHODS[0])
    if main:
        r = [main["summary"][d]["recall@10"]["mean"] for d in DIRECTIONS]
        lines += ["", f"Goal Recall@10 >= {goal} both ways (songbook, {METHODS[0]}): lyrics->audio {r[0]:.3f}, "
                      f"audio->lyrics {r[1]:.3f} ({'met' if min(r) >= goal else 'not met'}). This measures hearing "
                      "the songbook's synthetic espeak-ng chant, not real sung vocals."]  # fmt: skip
    return "\n".join(lines)
