"""Splits by lyric text and the evaluation protocol, on seeded toy data (no model, no Dagster)."""

import numpy as np
import pytest

from lyric2vec_models.evaluation import (
    DIRECTIONS,
    evaluate_vectors,
    format_report,
    gallery_and_query_clips,
    summarise_seeds,
)
from lyric2vec_models.splits import (
    assign_splits,
    group_overlap,
    near_duplicate_overlap,
    near_duplicate_pairs,
    normalise_text,
    split_groups,
    text_overlap,
)


def test_normalise_text_ignores_case_punctuation_and_spacing():
    assert normalise_text("Nun danket alle Gott,\nmit  Herzen!") == normalise_text(
        "nun DANKET alle gott mit herzen"
    )
    assert normalise_text("Meine Seel’ erhebt") == "meine seel erhebt"
    assert normalise_text(None) is None and normalise_text(" ,; ") is None


def test_near_duplicate_texts_are_joined_and_distinct_ones_are_not():
    gloria = (
        "et in terra pax hominibus bonae voluntatis laudamus te benedicimus te adoramus te glorificamus te"
    )
    texts = [
        gloria,
        gloria.replace("bonae", "bo nae").replace("laudamus te", "laudamuste"),  # OCR variant
        gloria + " gratias agimus tibi propter magnam gloriam tuam domine deus rex caelestis",  # longer text
        "meine seele erhebt den herren und mein geist freuet sich gottes meines heilandes",
        "kyrie eleison",
        "kyrie eleison christe",  # short texts: only identical ones are joined
        None,
    ]
    assert near_duplicate_pairs(texts) == [(0, 1), (0, 2), (1, 2)]


def test_identical_texts_and_works_form_one_group():
    texts = ["A b", "a, B", "c", None, "d", "c!"]
    works = ["w1", "w2", "w3", "w4", "w3", "w6"]  # w3 links "c" and "d"
    g = split_groups(texts, works)
    assert g[0] == g[1] and g[2] == g[4] == g[5] and len(set(g)) == 3
    g_artist = split_groups(texts, works, artists=["x", "y", "y", "z", "q", "q"])
    assert len(set(g_artist)) == 2  # y joins {0,1} with {2,4,5}; the instrumental stays alone


def test_assign_splits_never_puts_a_text_on_two_sides():
    rng = np.random.default_rng(0)
    words = [
        "herr",
        "gott",
        "dich",
        "loben",
        "wir",
        "seele",
        "freu",
        "sehr",
        "nacht",
        "licht",
        "ewig",
        "dank",
    ]
    pool = [" ".join(rng.choice(words, size=12)) for _ in range(60)]
    texts = [pool[i] if i < 60 else None for i in rng.integers(0, 70, size=300)]  # repeats and instrumentals
    works = [f"w{i}" for i in range(300)]
    for seed in range(3):
        s = assign_splits(texts, works, seed=seed)
        assert text_overlap(s, texts) == 0 and group_overlap(s, works) == 0
        assert near_duplicate_overlap(s, texts) == 0
        counts = {k: int((s == k).sum()) for k in ("train", "val", "test")}
        assert abs(counts["train"] - 210) <= 15 and abs(counts["test"] - 45) <= 15  # close to 70/15/15
    assert (assign_splits(texts, works, seed=0) == assign_splits(texts, works, seed=0)).all()
    assert (assign_splits(texts, works, seed=0) != assign_splits(texts, works, seed=1)).any()


def test_by_artist_mode_keeps_artists_apart():
    texts = [f"t{i}" for i in range(40)]
    artists = [f"a{i % 8}" for i in range(40)]
    s = assign_splits(texts, [f"w{i}" for i in range(40)], seed=0, artists=artists)
    assert group_overlap(s, artists) == 0 and set(s) == {"train", "val", "test"}


def test_gallery_is_first_program_and_query_another_program():
    clip_track = np.array([0, 0, 0, 1, 2, 2])
    programs = ["strings", "piano", "organ", "organ", "original", "original"]
    windows = [0, 0, 0, 0, 1, 0]
    g, q = gallery_and_query_clips(clip_track, programs, windows, 3, ("piano", "organ", "strings"))
    assert g.tolist() == [1, 3, 5]  # piano; the only clip; window 0
    assert q.tolist() == [2, -1, -1]  # organ; none; other windows of one recording are not another program


def _vectors(n=40, d=16, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    base = unit(rng.normal(size=(n, d)))
    near = lambda: unit(base + noise * rng.normal(size=(n, d)))  # noqa: E731
    return {"lyrics": near(), "description": near(), "audio": near(), "audio_query": near(), "meta": near(),
            "fused": near()}  # fmt: skip


def test_evaluate_vectors_reports_directions_and_random_baselines():
    z = _vectors()
    text_mask = np.ones(40, bool)
    text_mask[:5] = False  # 5 instrumentals: no lyrics queries, not in the lyrics gallery
    has_q = np.ones(40, bool)
    has_q[-10:] = False
    rep = evaluate_vectors(z, text_mask, has_q, seed=0)
    d = rep["directions"]
    assert d["lyrics->audio"]["n_queries"] == 35 and d["lyrics->audio"]["gallery_size"] == 40
    assert d["audio->lyrics"]["n_queries"] == 35 and d["audio->lyrics"]["gallery_size"] == 35
    assert d["audio->audio"]["n_queries"] == 30 and d["description->audio"]["n_queries"] == 40
    assert d["lyrics->audio"]["random"]["recall@10"] == pytest.approx(10 / 40)
    assert d["audio->lyrics"]["random"]["recall@10"] == pytest.approx(10 / 35)
    assert d["lyrics->audio"]["recall@10"] == 1.0  # views share the song's direction: easy at noise 0.1
    assert (
        rep["ablations"]["lyrics->text-only"]["contains_query"]
        and rep["ablations"]["lyrics->fused"]["contains_query"]
    )
    assert not rep["ablations"]["audio->fused"]["contains_query"]


def test_identical_gallery_vectors_score_at_chance_not_perfect():
    z = _vectors(n=50)
    z["meta"] = np.tile(z["meta"][:1], (50, 1))  # every song has the same metadata vector
    rep = evaluate_vectors(z, np.ones(50, bool), np.ones(50, bool), seed=3)
    m = rep["ablations"]["description->metadata-only"]
    assert m["recall@10"] == pytest.approx(0.2, abs=0.15)  # random 10/50, not 1.0


def test_seed_summary_and_markdown():
    reports = []
    for seed in range(3):
        rep = evaluate_vectors(
            _vectors(seed=seed, noise=1.0), np.ones(40, bool), np.ones(40, bool), seed=seed
        )
        reports.append(rep | {"split_seed": seed})
    s = summarise_seeds(reports)
    vals = [r["directions"]["lyrics->audio"]["recall@10"] for r in reports]
    got = s["metrics"]["directions/lyrics->audio"]["recall@10"]
    assert got["mean"] == pytest.approx(np.mean(vals)) and got["std"] == pytest.approx(np.std(vals, ddof=1))
    text = format_report(reports[0] | {"model_version": "v", "seed_summary": s})
    for d in DIRECTIONS:
        assert f"| {d} |" in text
    assert "lyrics->fused *" in text and "Mean ± std over split seeds [0, 1, 2]" in text
