"""Dagster definitions: every asset, check, resource, job, schedule and sensor of Lyric2Vec."""

import dagster as dg

from lyric2vec_pipeline.assets.catalogue import lyrics, spectrograms, tracks
from lyric2vec_pipeline.assets.learning import learning_assets, learning_checks
from lyric2vec_pipeline.assets.projection import projection_assets
from lyric2vec_pipeline.assets.recogniser import recogniser_assets
from lyric2vec_pipeline.assets.serving import serving_assets, serving_checks
from lyric2vec_pipeline.assets.sources import songbook_sources, user_manifest
from lyric2vec_pipeline.automation import ingest_job, retrain_job, user_manifest_sensor, weekly_retrain
from lyric2vec_pipeline.checks import catalogue_checks
from lyric2vec_pipeline.resources import LyricHome

catalogue_assets = [songbook_sources, user_manifest, tracks, lyrics, spectrograms]  # partitioned by catalogue
# unpartitioned, in graph order
model_assets = [*learning_assets, *serving_assets, *projection_assets, *recogniser_assets]
model_checks = [*learning_checks, *serving_checks]

defs = dg.Definitions(
    assets=[*catalogue_assets, *model_assets],
    asset_checks=[*catalogue_checks, *model_checks],
    jobs=[retrain_job, ingest_job],
    schedules=[weekly_retrain],
    sensors=[user_manifest_sensor],
    resources={"home": LyricHome()},
)
