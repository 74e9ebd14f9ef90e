"""Schemas and invariants of every Lyric2Vec asset.

Each `check_*` function takes the asset's data as plain frames/arrays and returns a list of
violations (empty = the contract holds). The pipeline runs them as Dagster asset checks; tests
plant a bad row and assert that the matching check names it.
"""

from data_contracts.contracts import (
    CLIPS_SCHEMA,
    LYRICS_SCHEMA,
    QUARANTINE_SCHEMA,
    TRACKS_SCHEMA,
    Violation,
    check_clips,
    check_lyrics,
    check_spectrograms,
    check_tracks,
)

__all__ = [
    "CLIPS_SCHEMA",
    "LYRICS_SCHEMA",
    "QUARANTINE_SCHEMA",
    "TRACKS_SCHEMA",
    "Violation",
    "check_clips",
    "check_lyrics",
    "check_spectrograms",
    "check_tracks",
]
