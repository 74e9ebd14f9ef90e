"""Shared loading for the issue-6 retrieval experiments: catalogue, lyrics, the 3 protocol splits."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import polars as pl

from lyric2vec_models.splits import assign_splits

HOME = Path(os.environ.get("LYRIC2VEC_EVAL_HOME", "/tmp/fullhome"))  # a built songbook home (read only)
OUT = Path(os.environ.get("ISSUE6_OUT", "/tmp/issue6"))
SEEDS = (0, 1, 2)


def catalogue() -> pl.DataFrame:
    """track_id, artist, language, lyrics (None = instrumental), partition; ordered by track_id."""
    import duckdb

    con = duckdb.connect(str(HOME / "catalogue.duckdb"), read_only=True)
    t = con.sql("SELECT track_id, artist, partition, has_lyrics FROM tracks ORDER BY track_id").pl()
    lyr = pl.concat([pl.read_parquet(p, columns=["track_id", "lyrics", "language"])
                     for p in sorted(glob.glob(str(HOME / "lyrics" / "*.parquet")))])  # fmt: skip
    t = t.join(lyr, on="track_id", how="left")
    return t.with_columns(
        pl.when(pl.col("has_lyrics")).then(pl.col("lyrics")).otherwise(None).alias("lyrics")
    )


def protocol_splits(cat: pl.DataFrame) -> dict[int, np.ndarray]:
    """The project's split function (text + near-duplicate + work groups) with seeds 0, 1, 2."""
    texts, works = cat["lyrics"].to_list(), cat["track_id"].to_list()
    return {s: assign_splits(texts, works, seed=s) for s in SEEDS}


def recogniser_text_tracks(cat: pl.DataFrame, splits: dict[int, np.ndarray]) -> np.ndarray:
    """Tracks in TRAIN for every protocol seed: the only lyrics the recogniser may learn from, so no
    text of any seed's val or test split is ever chanted in its training data."""
    mask = np.ones(len(cat), bool)
    for s in splits.values():
        mask &= s == "train"
    return mask & cat["lyrics"].is_not_null().to_numpy()


def text_source(cat: pl.DataFrame | None = None):
    from lyric2vec_models.chant_data import TextSource

    cat = catalogue() if cat is None else cat
    m = recogniser_text_tracks(cat, protocol_splits(cat))
    sub = cat.filter(pl.Series(m))
    return TextSource.from_lyrics(sub["lyrics"].to_list(), sub["language"].to_list())


def recogniser_leakage(cat: pl.DataFrame, splits: dict[int, np.ndarray]) -> dict:
    """Per seed: distinct recogniser texts shared with that seed's val/test texts, and near-duplicate
    pairs joining a recogniser text to a val/test text (both must be 0)."""
    from lyric2vec_models.splits import near_duplicate_pairs, normalise_text

    texts = cat["lyrics"].to_list()
    mask = recogniser_text_tracks(cat, splits)
    rec = {normalise_text(t) for t, k in zip(texts, mask, strict=True) if k}
    pairs = near_duplicate_pairs(texts)
    out = {"recogniser_tracks": int(mask.sum()), "recogniser_distinct_texts": len(rec)}
    for s, a in splits.items():
        held = {normalise_text(t) for t, x in zip(texts, a, strict=True) if x != "train" and t}
        near = sum((mask[i] and a[j] != "train") or (mask[j] and a[i] != "train") for i, j in pairs)
        out[f"seed{s}"] = {"shared_texts": len(rec & held), "near_duplicate_pairs": int(near)}
    return out
