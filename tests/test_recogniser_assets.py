"""The lyrics-recogniser assets end to end on a small real songbook home (issue 6 in the asset graph):
chant_corpus -> chant_recogniser -> lyrics_retrieval_report <- heldout_rerender.

Tiny budgets (12 generated clips, 6 training steps): this checks the plumbing, the leakage guard, the
protocol's shape and baselines and the reuse of built artifacts, not the recogniser's quality (that figure
comes from `make eval` on the full songbook; see docs/retrieval_report.md).
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from lyric2vec_models.asr import load_recogniser
from lyric2vec_models.lyrics_match import METHODS, format_lyrics_report
from lyric2vec_pipeline.assets.catalogue import lyrics, spectrograms, tracks
from lyric2vec_pipeline.assets.learning import read_catalogue
from lyric2vec_pipeline.assets.recogniser import PROTOCOL_SEEDS, protocol_splits, recogniser_assets
from lyric2vec_pipeline.assets.sources import songbook_sources, user_manifest
from lyric2vec_pipeline.resources import LyricHome

pytest.importorskip("tinysoundfont")
FLUID = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PARTITION = "songbook-bach"
SOURCE_CONFIG = {"vocals": True, "programs": ["piano"], "seconds": 12.0, "limit": 16}
RUN_CONFIG = {
    "chant_corpus": {"config": {"train_clips": 12, "heldout_clips": 4, "seconds": 4.0}},
    "chant_recogniser": {"config": {"max_steps": 6, "batch": 4}},
    "heldout_rerender": {"config": {}},
    "lyrics_retrieval_report": {"config": {}},
}


def _espeak_or_skip():
    from lyric2vec_pipeline.songbook import render

    try:
        render._espeak()
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    _espeak_or_skip()
    if not FLUID.is_file():
        pytest.fail(f"{FLUID} missing: `make setup` installs fluid-soundfont-gm (the held-out soundfont)")
    root = tmp_path_factory.mktemp("recogniser")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("catalogue", [PARTITION])
    result = dg.materialize([songbook_sources, user_manifest, tracks, lyrics, spectrograms], partition_key=PARTITION,
                            instance=instance, resources={"home": LyricHome(home=str(root))},
                            run_config={"ops": {"songbook_sources": {"config": SOURCE_CONFIG}}})  # fmt: skip
    assert result.success
    return root


def run(home: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(recogniser_assets, resources={"home": LyricHome(home=str(home))},
                          run_config={"ops": RUN_CONFIG})  # fmt: skip


def metadata(result, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset])
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def first_run(home):
    result = run(home)
    assert result.success
    return result


def test_chant_corpus_chants_only_texts_train_in_every_seed(home, first_run):
    meta = metadata(first_run, "chant_corpus")
    assert meta["train_clips"] == 12 and meta["heldout_clips"] == 4 and not meta["reused"]
    leakage = meta["leakage"]
    assert all(leakage[f"seed{s}"] == {"shared_texts": 0, "near_duplicate_pairs": 0} for s in PROTOCOL_SEEDS)
    cat = read_catalogue(LyricHome(home=str(home)))
    splits = protocol_splits(cat, PROTOCOL_SEEDS)
    train_all = sum(all(splits[s][i] == "train" for s in PROTOCOL_SEEDS) for i in range(len(cat)))
    assert leakage["recogniser_tracks"] == train_all > 0
    chant = home / "recogniser" / "chant"
    mels = np.load(chant / "train_mels.npy")
    labels = json.loads((chant / "train_labels.json").read_text())
    assert mels.shape[0] == len(labels) == 12 and mels.shape[1] == 64 and mels.dtype == np.float16
    assert all(labels) and all(set(x) <= set(" abcdefghijklmnopqrstuvwxyz'") for x in labels)


def test_recogniser_weights_are_verified_safetensors(home, first_run):
    meta = metadata(first_run, "chant_recogniser")
    assert meta["steps"] == 6 and meta["train_clips"] == 12 and 0.0 <= meta["heldout_cer"]
    model, manifest = load_recogniser(home / "recogniser" / "model")
    assert manifest["version"] == meta["version"] and not model.training


def test_heldout_rerender_covers_every_test_work_with_unheard_timbres(home, first_run):
    meta = metadata(first_run, "heldout_rerender")
    cat = read_catalogue(LyricHome(home=str(home)))
    splits = protocol_splits(cat, PROTOCOL_SEEDS)
    in_test = {t for s in splits.values() for t, x in zip(cat["track_id"], s, strict=True) if x == "test"}
    held = pl.read_parquet(home / "recogniser" / "heldout_render" / "tracks.parquet")
    assert set(held["track_id"]) == in_test and meta["works"] == len(in_test) > 0
    assert set(held["program"]) <= {"choir", "flute", "clarinet"}
    mels = np.load(home / "recogniser" / "heldout_render" / "mels.npy")
    assert mels.shape == (len(in_test), 64, 1292)  # 30 s at 22,050 Hz, hop 512, centred frames


def test_report_follows_the_protocol_with_baselines(home, first_run):
    report = json.loads((home / "lyrics_retrieval_report.json").read_text())
    cat = read_catalogue(LyricHome(home=str(home)))
    splits = protocol_splits(cat, PROTOCOL_SEEDS)
    has_lyrics = cat["lyrics"].is_not_null().to_numpy()
    galleries = [int(((s == "test") & has_lyrics).sum()) for s in splits.values()]
    for name in ("songbook", "heldout_rerender"):
        corpus = report["corpora"][name]
        assert set(corpus["methods"]) == set(METHODS)
        for method in METHODS:
            summary = corpus["methods"][method]["summary"]
            assert [r["split_seed"] for r in corpus["methods"][method]["per_seed"]] == PROTOCOL_SEEDS
            for d in ("lyrics->audio", "audio->lyrics"):
                assert summary[d]["gallery"] == galleries
                exact = np.mean([min(10, g) / g for g in galleries])  # one relevant item per query
                assert summary[d]["random_recall@10"] == pytest.approx(exact)
        # the ceiling: the sung words themselves find their song (ties among identical verses at random)
        assert corpus["methods"][METHODS[2]]["summary"]["lyrics->audio"]["mrr"]["mean"] >= 0.75
        assert set(report["transcripts"][name]) <= set(cat["track_id"])
    table = format_lyrics_report(report)
    assert "| transcript / full lyrics | lyrics->audio |" in table and "synthetic espeak-ng chant" in table


def test_second_run_reuses_every_built_artifact(home, first_run):
    version = metadata(first_run, "chant_recogniser")["version"]
    again = run(home)
    assert again.success
    assert metadata(again, "chant_corpus")["reused"] and metadata(again, "heldout_rerender")["reused"]
    assert metadata(again, "chant_recogniser")["reused"]
    assert metadata(again, "chant_recogniser")["version"] == version
