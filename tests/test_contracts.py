"""Every data-contract rule fails on a planted bad row, and holds on good data."""

import json

import numpy as np
import polars as pl
import pytest

from data_contracts import check_clips, check_lyrics, check_spectrograms, check_tracks
from lyric2vec_pipeline.checks import lyrics_contract, spectrograms_contract, tracks_contract
from lyric2vec_pipeline.resources import LyricHome, replace_partition


def good_tracks(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({
        "track_id": [f"t{i}" for i in range(n)], "title": [f"Song {i}" for i in range(n)],
        "artist": ["A"] * n, "genre": ["g"] * n, "language": ["German"] * n, "key": ["C major"] * n,
        "mode": ["major"] * n, "meter": ["4/4"] * n, "parts": [4] * n, "license": ["CC0"] * n,
        "source": ["test"] * n, "source_kind": ["songbook"] * n, "partition": ["p"] * n,
        "has_lyrics": [True] * (n - 1) + [False], "duration_s": [30.0] * n,
    })


def good_lyrics(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"track_id": [f"t{i}" for i in range(n)],
                         "lyrics": [f"words of song {i}" for i in range(n - 1)] + [None]})


def good_clips(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"clip_id": [f"t{i}.piano" for i in range(n)], "track_id": [f"t{i}" for i in range(n)]})


def good_mels(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(-3, 2, (n, 8, 20)).astype(np.float16)


def rules(violations) -> set[str]:
    return {v.rule for v in violations}


def test_good_data_passes():
    t = good_tracks()
    assert check_tracks(t) == []
    assert check_lyrics(good_lyrics(), t) == []
    assert check_clips(good_clips(), t) == []
    assert check_spectrograms(good_mels(), 8, 20, 1e-5) == []


@pytest.mark.parametrize(
    ("plant", "rule"),
    [
        (lambda t: t.with_columns(pl.when(pl.col("track_id") == "t1").then(pl.lit("t0")).otherwise(pl.col("track_id")).alias("track_id")), "unique_track_id"),
        (lambda t: t.with_columns(pl.when(pl.col("track_id") == "t1").then(pl.lit(" ")).otherwise(pl.col("track_id")).alias("track_id")), "non_empty_track_id"),
        (lambda t: t.with_columns(pl.when(pl.col("track_id") == "t1").then(pl.lit("")).otherwise(pl.col("title")).alias("title")), "non_empty_title"),
        (lambda t: t.with_columns(pl.when(pl.col("track_id") == "t2").then(None).otherwise(pl.col("license")).alias("license")), "license_present"),
        (lambda t: t.with_columns(pl.lit("scraped").alias("source_kind")), "source_kind"),
        (lambda t: t.drop("license"), "schema"),
    ],
)
def test_tracks_rules_fail_on_planted_row(plant, rule):
    assert rule in rules(check_tracks(plant(good_tracks())))


@pytest.mark.parametrize(
    ("text", "rule"),
    [("Gr\ufffd\ufffd Gott", "utf8_lyrics"), ("bell\x07", "utf8_lyrics"), ("   ", "non_empty_lyrics")],
)
def test_lyrics_rules_fail_on_planted_row(text, rule):
    lyr = good_lyrics().with_columns(pl.when(pl.col("track_id") == "t0").then(pl.lit(text)).otherwise(pl.col("lyrics")).alias("lyrics"))
    assert rule in rules(check_lyrics(lyr, good_tracks()))


def test_lyrics_must_agree_with_tracks():
    lyr = pl.concat([good_lyrics(), pl.DataFrame({"track_id": ["ghost"], "lyrics": ["boo"]})])
    assert "lyrics_track_exists" in rules(check_lyrics(lyr, good_tracks()))
    invented = good_lyrics().with_columns(pl.lit("invented words").alias("lyrics"))  # t2 is an instrumental
    assert "has_lyrics_agrees" in rules(check_lyrics(invented, good_tracks()))


def test_clip_rules_fail_on_planted_row():
    t = good_tracks()
    assert "unique_clip_id" in rules(check_clips(pl.concat([good_clips(), good_clips().head(1)]), t))
    orphan = pl.concat([good_clips(), pl.DataFrame({"clip_id": ["x.piano"], "track_id": ["x"]})])
    assert "clip_track_exists" in rules(check_clips(orphan, t))
    assert "track_has_audio" in rules(check_clips(good_clips().head(2), t))


def test_spectrogram_rules_fail_on_planted_clip():
    nan = good_mels()
    nan[1, 3, 4] = np.nan
    assert "finite" in rules(check_spectrograms(nan, 8, 20, 1e-5))
    silent = good_mels()
    silent[2] = np.log(1e-5)
    assert "non_silent" in rules(check_spectrograms(silent, 8, 20, 1e-5))
    assert "declared_shape" in rules(check_spectrograms(good_mels()[:, :, :10], 8, 20, 1e-5))
    assert "dtype" in rules(check_spectrograms(good_mels().astype(np.float32), 8, 20, 1e-5))


def test_asset_checks_fail_on_planted_rows_in_real_artifacts(tmp_path):
    """The Dagster checks read the real DuckDB / parquet / npy files: plant a bad row in each."""
    home = LyricHome(home=str(tmp_path))
    tracks = good_tracks().with_columns(pl.lit("p").alias("partition"))
    with home.connect() as con:
        replace_partition(con, "tracks", "p", tracks.with_columns(pl.Series("license", ["CC0", "CC0", "CC0"])))
        clips = good_clips().with_columns(pl.lit("piano").alias("program_name"), pl.lit("/x.flac").alias("audio_path"),
                                          pl.lit(0).alias("window"), pl.lit("p").alias("partition"))
        replace_partition(con, "clips", "p", clips)
    home.path("lyrics").mkdir()
    good_lyrics().write_parquet(home.path("lyrics", "p.parquet"))
    home.path("spectrograms", "p").mkdir(parents=True)
    np.save(home.path("spectrograms", "p", "mels.npy"), good_mels())
    home.path("spectrograms", "spec.json").write_text(json.dumps(
        {"sample_rate": 22050, "n_fft": 1024, "hop_length": 512, "n_mels": 8, "fmin": 30.0, "fmax": 11025.0,
         "clip_seconds": 19 * 512 / 22050, "log_floor": 1e-5}))

    def run(check):
        return check(home=home)

    assert run(tracks_contract).passed and run(lyrics_contract).passed and run(spectrograms_contract).passed

    with home.connect() as con:  # planted: a track without a license
        con.execute("UPDATE tracks SET license = '' WHERE track_id = 't1'")
    assert not run(tracks_contract).passed
    pl.concat([good_lyrics(), pl.DataFrame({"track_id": ["t9"], "lyrics": ["\ufffd"]})]).write_parquet(home.path("lyrics", "p.parquet"))
    assert not run(lyrics_contract).passed
    bad = good_mels()
    bad[0, 0, 0] = np.inf
    np.save(home.path("spectrograms", "p", "mels.npy"), bad)
    result = run(spectrograms_contract)
    assert not result.passed and "finite" in result.metadata["violations"].value
