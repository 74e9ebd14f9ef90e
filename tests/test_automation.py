"""The weekly retrain schedule and the user-manifest sensor are in the definitions, and the sensor fires."""

import json

import dagster as dg
import numpy as np
import polars as pl
import soundfile as sf

from lyric2vec_pipeline.automation import user_manifest_sensor
from lyric2vec_pipeline.definitions import defs
from lyric2vec_pipeline.resources import LyricHome


def test_schedule_and_sensor_are_defined():
    schedule = defs.resolve_schedule_def("weekly_retrain")
    assert schedule.cron_schedule == "0 3 * * 1"
    job = defs.resolve_job_def("retrain")
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"text_features", "splits", "trained_model", "eval_report", "embeddings", "faiss_index"} <= selected
    assert "tracks" not in selected  # retraining does not re-ingest
    assert defs.resolve_sensor_def("user_manifest_sensor").job_name == "ingest_user_batch"


def _manifest(path, n_rows: int, audio) -> None:
    rows = [{"track_id": f"u{i}", "title": f"Song {i}", "artist": "A", "genre": "g", "lyrics": "la la",
             "audio_path": audio.name, "license": "CC0"} for i in range(n_rows)]
    pl.DataFrame(rows).write_csv(path)


def test_sensor_fires_on_new_manifest_rows(tmp_path):
    home = LyricHome(home=str(tmp_path / "home"))
    inbox = home.path("inbox")
    inbox.mkdir(parents=True)
    audio = inbox / "tone.wav"
    sf.write(audio, 0.2 * np.sin(np.arange(22050 * 2) / 10.0).astype(np.float32), 22050)
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"home": home})
        return user_manifest_sensor(ctx)

    empty = tick(None)
    assert empty.run_requests == []

    _manifest(inbox / "shop.csv", 2, audio)
    first = tick(empty.cursor)
    assert [r.partition_key for r in first.run_requests] == ["user-shop-0-2"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["user-shop-0-2"]
    assert json.loads(first.cursor) == {str(inbox / "shop.csv"): 2}

    assert tick(first.cursor).run_requests == []  # nothing new: no run

    _manifest(inbox / "shop.csv", 5, audio)  # three rows appended
    second = tick(first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["user-shop-2-5"]
    spec = json.loads(home.path("user_batches", "user-shop-2-5.json").read_text())
    assert spec["rows"] == [2, 5]
