"""The data half: definitions load, the songbook and a user catalogue materialize, bad input is quarantined."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import soundfile as sf

from lyric2vec_pipeline.assets.sources import register_user_batch
from lyric2vec_pipeline.checks import catalogue_checks
from lyric2vec_pipeline.definitions import catalogue_assets, defs
from lyric2vec_pipeline.ingest import ManifestError, read_manifest
from lyric2vec_pipeline.resources import LyricHome

REPO = Path(__file__).resolve().parents[1]
SONGBOOK_CONFIG = {"ops": {"songbook_sources": {"config": {"limit": 3}}}}


def materialize(home: Path, partition: str, run_config: dict | None = None, instance=None) -> dg.ExecuteInProcessResult:
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("catalogue", [partition])
    return dg.materialize(
        [*catalogue_assets, *catalogue_checks],
        partition_key=partition,
        instance=instance,
        resources={"home": LyricHome(home=str(home))},
        run_config=run_config or {},
        raise_on_error=False,
    )


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"songbook_sources", "user_manifest", "tracks", "lyrics", "spectrograms"} <= keys


@pytest.fixture(scope="module")
def songbook_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("songbook")
    result = materialize(home, "songbook-bach", SONGBOOK_CONFIG)
    assert result.success
    return home


def test_songbook_partition_materializes(songbook_home):
    home = LyricHome(home=str(songbook_home))
    tracks = home.table("tracks")
    clips = home.table("clips")
    assert len(tracks) == 3 and tracks["has_lyrics"].all()
    assert (tracks["license"].str.contains("Public domain")).all()
    assert tracks["source"].str.starts_with("music21 core corpus: bach/").all()
    assert clips.group_by("track_id").len()["len"].to_list() == [3, 3, 3]  # 3 GM programs per work
    lyr = pl.read_parquet(songbook_home / "lyrics" / "songbook-bach.parquet")
    assert (lyr["n_words"] > 10).all()
    onsets = [w["onset_s"] for w in lyr["words"][0]]
    assert onsets == sorted(onsets) and onsets[0] >= 0.0  # first verse's word onsets in time order
    mels = np.load(songbook_home / "spectrograms" / "songbook-bach" / "mels.npy")
    spec = json.loads((songbook_home / "spectrograms" / "spec.json").read_text())
    assert mels.shape == (9, spec["n_mels"], 1 + int(spec["clip_seconds"] * spec["sample_rate"]) // spec["hop_length"])
    assert mels.dtype == np.float16 and np.isfinite(mels).all()
    audio = sf.info(clips["audio_path"][0])
    assert audio.samplerate == 22050 and audio.channels == 1 and abs(audio.duration - 30.0) < 1e-3


def test_same_build_gives_same_spectrograms(songbook_home, tmp_path):
    assert materialize(tmp_path, "songbook-bach", SONGBOOK_CONFIG).success
    first = pl.read_parquet(songbook_home / "spectrograms" / "songbook-bach" / "clips.parquet")
    second = pl.read_parquet(tmp_path / "spectrograms" / "songbook-bach" / "clips.parquet")
    assert first.select("clip_id", "sha256").equals(second.select("clip_id", "sha256"))
    a = np.load(songbook_home / "spectrograms" / "songbook-bach" / "mels.npy")
    b = np.load(tmp_path / "spectrograms" / "songbook-bach" / "mels.npy")
    assert a.tobytes() == b.tobytes()


def test_vocals_switch_changes_the_audio(songbook_home, tmp_path):
    config = {"ops": {"songbook_sources": {"config": {"limit": 1, "vocals": False, "programs": ["organ"]}}}}
    assert materialize(tmp_path, "songbook-bach", config).success
    clip = LyricHome(home=str(tmp_path)).table("clips")["clip_id"][0]
    without, _ = sf.read(tmp_path / "songbook" / "audio" / f"{clip}.flac")
    with_voice, _ = sf.read(songbook_home / "songbook" / "audio" / f"{clip}.flac")
    assert without.shape == with_voice.shape
    assert np.abs(without - with_voice).mean() > 1e-3


# ---- user catalogues -------------------------------------------------------------------------


def _tone(seconds: float, rate: int, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    return np.stack([x] * channels, axis=1).astype(np.float32) if channels > 1 else x.astype(np.float32)


@pytest.fixture()
def user_catalogue(tmp_path) -> Path:
    """A manifest with good files of several formats and one row for each kind of bad input."""
    d = tmp_path / "catalogue"
    d.mkdir()
    sf.write(d / "stereo44k.wav", _tone(12, 44100, channels=2), 44100)
    sf.write(d / "mono16k.flac", _tone(8, 16000), 16000)
    sf.write(d / "song.ogg", _tone(6, 32000), 32000)
    sf.write(d / "song.mp3", _tone(6, 44100), 44100)
    sf.write(d / "long.wav", _tone(70, 8000), 8000)  # 70 s: two 30-s windows, the 10-s rest dropped
    sf.write(d / "silent.wav", np.zeros(22050 * 3, dtype=np.float32), 22050)
    sf.write(d / "full.wav", _tone(3, 22050), 22050)
    data = (d / "full.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])
    sf.write(d / "cut.flac", _tone(5, 22050), 22050)
    data = (d / "cut.flac").read_bytes()
    (d / "cut_short.flac").write_bytes(data[: len(data) // 2])  # header fine, frames missing
    (d / "empty.wav").write_bytes(b"")
    (d / "notaudio.wav").write_text("this is not audio")
    with open(d / "huge.wav", "wb") as f:  # sparse: 201 MB on paper, nothing on disk
        f.truncate(201 * 1024 * 1024)
    (d / "latin1.txt").write_bytes("Grüß Gott".encode("latin-1"))
    (d / "ok.txt").write_text("Über allen Gipfeln ist Ruh\nin allen Wipfeln", encoding="utf-8")
    rows = [
        ("t-wav", "Stereo", "stereo44k.wav", "", "ok.txt", "CC0"),
        ("t-flac", "Flac", "mono16k.flac", "la la la", "", "CC0"),
        ("t-ogg", "Ogg", "song.ogg", "oh ogg", "", "CC-BY"),
        ("t-mp3", "Mp3", "song.mp3", "mp three", "", "CC-BY"),
        ("t-long", "Long", "long.wav", "a long song", "", "CC0"),
        ("t-instr", "Instrumental", "full.wav", "", "", "CC0"),
        ("t-missing", "Missing", "nope.wav", "x", "", "CC0"),
        ("t-silent", "Silent", "silent.wav", "x", "", "CC0"),
        ("t-trunc", "Truncated", "truncated.wav", "x", "", "CC0"),
        ("t-cut", "Cut", "cut_short.flac", "x", "", "CC0"),
        ("t-empty", "Empty", "empty.wav", "x", "", "CC0"),
        ("t-notaudio", "Not audio", "notaudio.wav", "x", "", "CC0"),
        ("t-huge", "Huge", "huge.wav", "x", "", "CC0"),
        ("t-latin1", "Latin-1 lyrics", "full.wav", "", "latin1.txt", "CC0"),
        ("t-wav", "Duplicate", "full.wav", "x", "", "CC0"),
        ("", "No id", "full.wav", "x", "", "CC0"),
        ("t-nolicense", "No license", "full.wav", "x", "", ""),
        ("t-notitle", "", "full.wav", "x", "", "CC0"),
    ]
    df = pl.DataFrame(rows, schema=["track_id", "title", "audio_path", "lyrics", "lyrics_path", "license"], orient="row")
    df = df.with_columns(pl.lit("Tester").alias("artist"), pl.lit("test").alias("genre"))
    df.write_csv(d / "manifest.csv")
    return d / "manifest.csv"


EXPECTED_QUARANTINE = {
    "t-missing": "missing_audio_file",
    "t-silent": "silent_audio",
    "t-trunc": "truncated_audio",
    "t-cut": "undecodable_audio",
    "t-empty": "empty_audio_file",
    "t-notaudio": "undecodable_audio",
    "t-huge": "audio_file_too_large",
    "t-latin1": "lyrics_not_utf8",
    "t-wav": "duplicate_track_id",
    "": "empty_track_id",
    "t-nolicense": "missing_license",
    "t-notitle": "missing_title",
}


def test_user_manifest_quarantines_bad_rows_and_keeps_the_rest(user_catalogue, tmp_path):
    home = tmp_path / "home"
    key = register_user_batch(LyricHome(home=str(home)), user_catalogue, "b1")
    result = materialize(home, key)
    assert result.success
    lh = LyricHome(home=str(home))
    tracks = lh.table("tracks").sort("track_id")
    assert tracks["track_id"].to_list() == ["t-flac", "t-instr", "t-long", "t-mp3", "t-ogg", "t-wav"]
    assert dict(zip(tracks["track_id"], tracks["has_lyrics"], strict=True))["t-instr"] is False
    quarantine = lh.table("quarantine")
    got = {(r["track_id"] or ""): r["reason"] for r in quarantine.iter_rows(named=True)}
    assert got == EXPECTED_QUARANTINE
    assert all(r["detail"] for r in quarantine.iter_rows(named=True))  # every refusal says why
    clips = lh.table("clips")
    assert sorted(clips.filter(pl.col("track_id") == "t-long")["clip_id"].to_list()) == ["t-long.w0", "t-long.w1"]
    lyr = pl.read_parquet(home / "lyrics" / f"{key}.parquet").sort("track_id")
    texts = dict(zip(lyr["track_id"], lyr["lyrics"], strict=True))
    assert texts["t-instr"] is None  # instrumental: text view missing, not invented
    assert texts["t-wav"] == "Über allen Gipfeln ist Ruh\nin allen Wipfeln"  # from lyrics_path
    mels = np.load(home / "spectrograms" / key / "mels.npy")
    assert len(mels) == 7 and np.isfinite(mels).all()  # 5 single-window tracks + 2 windows of t-long
    tracks_meta = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == ["tracks"])
    assert tracks_meta.materialization.metadata["quarantined"].value == len(EXPECTED_QUARANTINE)
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"tracks_contract": True, "lyrics_contract": True, "spectrograms_contract": True}


def test_wholly_bad_manifest_fails_naming_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\n1,x\n")
    with pytest.raises(ManifestError, match=r"bad\.csv: required column\(s\) \['track_id'"):
        read_manifest(bad)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match="garbage.parquet: cannot read manifest"):
        read_manifest(garbage)
    home = tmp_path / "home"
    key = register_user_batch(LyricHome(home=str(home)), bad, "bad")
    result = materialize(home, key)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "bad.csv" in failure.event_specific_data.error.cause.message


def test_jsonl_and_parquet_manifests_read_alike(user_catalogue, tmp_path):
    csv = read_manifest(user_catalogue)
    csv.drop("row").write_ndjson(tmp_path / "m.jsonl")
    csv.drop("row").write_parquet(tmp_path / "m.parquet")
    assert read_manifest(tmp_path / "m.jsonl").equals(csv)
    assert read_manifest(tmp_path / "m.parquet").equals(csv)


def test_materialize_through_dagster_command_line(tmp_path):
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("")
    env = {**os.environ, "LYRIC2VEC_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    subprocess.run(
        [sys.executable, "-c",
         "import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions('catalogue', ['songbook-other'])"],
        env=env, check=True, cwd=REPO,
    )
    config = {"ops": {"songbook_sources": {"config": {"limit": 2, "programs": ["piano"]}}},
              "execution": {"config": {"in_process": {}}}}  # one process: no re-import of the graph per step
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "lyric2vec_pipeline.definitions",
         "--select", "songbook_sources,user_manifest,tracks,lyrics,spectrograms", "--partition", "songbook-other",
         "--config-json", json.dumps(config)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lh = LyricHome(home=str(home))
    n_tracks = len(lh.table("tracks"))
    n_quarantined = len(lh.table("quarantine"))
    assert n_tracks + n_quarantined == 2 and n_tracks >= 1
    assert np.load(home / "spectrograms" / "songbook-other" / "mels.npy").shape[0] == n_tracks
