"""Dagster definitions: every asset, check, resource, job, schedule and sensor of Lyric2Vec."""

import dagster as dg

from lyric2vec_pipeline.assets.catalogue import lyrics, spectrograms, tracks
from lyric2vec_pipeline.assets.sources import songbook_sources, user_manifest
from lyric2vec_pipeline.checks import catalogue_checks
from lyric2vec_pipeline.resources import LyricHome

catalogue_assets = [songbook_sources, user_manifest, tracks, lyrics, spectrograms]

defs = dg.Definitions(
    assets=catalogue_assets,
    asset_checks=catalogue_checks,
    resources={"home": LyricHome()},
)
