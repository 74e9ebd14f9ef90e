"""Schedules and sensors: weekly retraining, and ingesting new rows of user manifests."""

import json
from pathlib import Path

import dagster as dg

from lyric2vec_pipeline.assets.sources import catalogue_partitions, register_user_batch
from lyric2vec_pipeline.ingest import ManifestError, read_manifest
from lyric2vec_pipeline.resources import LyricHome

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")
CATALOGUE_ASSETS = ["user_manifest", "tracks", "lyrics", "spectrograms"]

# Everything from training on: features are cached, so a retrain recomputes only what changed.
retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets("text_features", "splits").downstream(),
    description="Re-split, retrain, evaluate, and (if the evaluation gate passes) re-export and re-index.",
)
weekly_retrain = dg.ScheduleDefinition(
    name="weekly_retrain",
    job=retrain_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,  # switched on in the UI or with `dagster schedule start`
)

ingest_job = dg.define_asset_job(
    "ingest_user_batch", selection=dg.AssetSelection.assets(*CATALOGUE_ASSETS), partitions_def=catalogue_partitions
)


def new_batches(home: LyricHome, cursor: dict[str, int]) -> tuple[list[tuple[Path, int, int]], dict[str, int]]:
    """Manifests in <home>/inbox with rows beyond what the cursor has seen -> [(manifest, start, end)]."""
    inbox = home.path("inbox")
    found, seen = [], dict(cursor)
    for manifest in sorted(inbox.glob("*")) if inbox.is_dir() else []:
        if manifest.suffix.lower() not in MANIFEST_SUFFIXES:
            continue
        try:
            n = len(read_manifest(manifest))
        except ManifestError:
            continue  # a wholly bad manifest: the sensor's log names it; nothing to ingest yet
        start = seen.get(str(manifest), 0)
        if n > start:
            found.append((manifest, start, n))
            seen[str(manifest)] = n
    return found, seen


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def user_manifest_sensor(context: dg.SensorEvaluationContext, home: LyricHome) -> dg.SensorResult:
    """New rows of a manifest in <LYRIC2VEC_HOME>/inbox become a new ingest batch partition and a run."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    batches, cursor = new_batches(home, cursor)
    keys, requests = [], []
    for manifest, start, end in batches:
        key = register_user_batch(home, manifest, f"{manifest.stem}-{start}-{end}", rows=(start, end))
        keys.append(key)
        requests.append(dg.RunRequest(run_key=key, partition_key=key))
        context.log.info(f"{manifest}: rows {start}..{end - 1} -> partition {key}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[catalogue_partitions.build_add_request(keys)] if keys else [],
        cursor=json.dumps(cursor),
    )
