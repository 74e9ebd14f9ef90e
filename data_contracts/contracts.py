"""Column schemas (DuckDB types) and invariant checks for the catalogue assets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

# name -> DuckDB type. Order is the table's column order.
TRACKS_SCHEMA: dict[str, str] = {
    "track_id": "VARCHAR PRIMARY KEY",  # unique, non-empty
    "title": "VARCHAR NOT NULL",  # non-empty
    "artist": "VARCHAR NOT NULL",  # composer, or the catalogue's artist
    "genre": "VARCHAR NOT NULL",  # collection, or the catalogue's genre
    "language": "VARCHAR",  # of the lyrics; 'unknown' when not known
    "key": "VARCHAR",  # e.g. 'G minor'
    "mode": "VARCHAR",  # 'major' | 'minor' | 'unknown'
    "meter": "VARCHAR",  # e.g. '4/4'
    "parts": "INTEGER",  # voices in the score (songbook) or NULL
    "license": "VARCHAR NOT NULL",  # never empty: a track without a license is quarantined
    "source": "VARCHAR NOT NULL",  # where the track came from (corpus path or manifest file + row)
    "source_kind": "VARCHAR NOT NULL",  # 'songbook' | 'user'
    "partition": "VARCHAR NOT NULL",  # Dagster partition key that wrote the row
    "has_lyrics": "BOOLEAN NOT NULL",  # False = instrumental: the text view is missing, never invented
    "duration_s": "DOUBLE",  # seconds of audio (songbook: of the score)
}
CLIPS_SCHEMA: dict[str, str] = {
    "clip_id": "VARCHAR PRIMARY KEY",  # '<track_id>.<program>' or '<track_id>.w<window>'
    "track_id": "VARCHAR NOT NULL",
    "program_name": "VARCHAR",  # GM program of a songbook rendering; 'original' for user audio
    "audio_path": "VARCHAR NOT NULL",
    "window": "INTEGER NOT NULL",  # index of the fixed window within the audio file
    "partition": "VARCHAR NOT NULL",
}
QUARANTINE_SCHEMA: dict[str, str] = {
    "partition": "VARCHAR NOT NULL",
    "stage": "VARCHAR NOT NULL",  # asset that refused the row: 'tracks' | 'spectrograms' | ...
    "track_id": "VARCHAR",  # may be empty: that can be the problem
    "source": "VARCHAR",  # file and row the bad input came from
    "reason": "VARCHAR NOT NULL",  # short code, e.g. 'missing_audio_file'
    "detail": "VARCHAR",  # what exactly was wrong, for a person
}
LYRICS_SCHEMA: dict[str, pl.DataType] = {
    "track_id": pl.Utf8,
    "lyrics": pl.Utf8,  # NULL for instrumentals
    "language": pl.Utf8,
    "n_words": pl.Int64,
    "n_verses": pl.Int64,
}


@dataclass(frozen=True)
class Violation:
    rule: str  # e.g. 'unique_track_id'
    detail: str  # which rows and why

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


def _examples(values) -> str:
    vals = list(values)
    return ", ".join(repr(v) for v in vals[:5]) + (f" (+{len(vals) - 5} more)" if len(vals) > 5 else "")


def check_tracks(tracks: pl.DataFrame) -> list[Violation]:
    out: list[Violation] = []
    missing = [c for c in TRACKS_SCHEMA if c not in tracks.columns]
    if missing:
        return [Violation("schema", f"missing columns {missing}")]
    ids = tracks["track_id"]
    empty = tracks.filter(ids.is_null() | (ids.str.strip_chars() == ""))
    if len(empty):
        out.append(Violation("non_empty_track_id", f"{len(empty)} rows with an empty track_id"))
    dup = tracks.group_by("track_id").len().filter(pl.col("len") > 1)
    if len(dup):
        out.append(Violation("unique_track_id", f"duplicated: {_examples(dup['track_id'])}"))
    for col, rule in (("title", "non_empty_title"), ("license", "license_present")):
        bad = tracks.filter(pl.col(col).is_null() | (pl.col(col).str.strip_chars() == ""))
        if len(bad):
            out.append(Violation(rule, f"{len(bad)} rows: {_examples(bad['track_id'])}"))
    kinds = set(tracks["source_kind"].unique().to_list()) - {"songbook", "user"}
    if kinds:
        out.append(Violation("source_kind", f"unknown source kinds {sorted(map(str, kinds))}"))
    return out


def check_lyrics(lyrics: pl.DataFrame, tracks: pl.DataFrame | None = None) -> list[Violation]:
    out: list[Violation] = []
    present = lyrics.filter(pl.col("lyrics").is_not_null())
    blank = present.filter(pl.col("lyrics").str.strip_chars() == "")
    if len(blank):
        out.append(Violation("non_empty_lyrics", f"empty strings instead of NULL: {_examples(blank['track_id'])}"))
    bad_utf8 = [
        tid
        for tid, text in zip(present["track_id"], present["lyrics"], strict=True)
        if "\ufffd" in text or any(ord(ch) < 32 and ch not in "\n\t" for ch in text)
    ]
    if bad_utf8:
        out.append(Violation("utf8_lyrics", f"replacement or control characters in {_examples(bad_utf8)}"))
    if tracks is not None:
        orphans = set(lyrics["track_id"]) - set(tracks["track_id"])
        if orphans:
            out.append(Violation("lyrics_track_exists", f"lyrics for unknown tracks {_examples(sorted(orphans))}"))
        expect = dict(zip(tracks["track_id"], tracks["has_lyrics"], strict=True))
        wrong = [t for t, txt in zip(lyrics["track_id"], lyrics["lyrics"], strict=True) if expect.get(t, txt is not None) != (txt is not None)]
        if wrong:
            out.append(Violation("has_lyrics_agrees", f"tracks.has_lyrics disagrees for {_examples(wrong)}"))
    return out


def check_clips(clips: pl.DataFrame, tracks: pl.DataFrame) -> list[Violation]:
    out: list[Violation] = []
    dup = clips.group_by("clip_id").len().filter(pl.col("len") > 1)
    if len(dup):
        out.append(Violation("unique_clip_id", f"duplicated: {_examples(dup['clip_id'])}"))
    orphans = set(clips["track_id"]) - set(tracks["track_id"])
    if orphans:
        out.append(Violation("clip_track_exists", f"clips of unknown tracks {_examples(sorted(orphans))}"))
    without = set(tracks["track_id"]) - set(clips["track_id"])
    if without:
        out.append(Violation("track_has_audio", f"tracks without any clip {_examples(sorted(without))}"))
    return out


def check_spectrograms(mels: np.ndarray, n_mels: int, frames: int, log_floor: float) -> list[Violation]:
    """mels: (n_clips, n_mels, frames) float16 log-mel. Finite, of the declared shape, not silent."""
    out: list[Violation] = []
    if mels.ndim != 3 or mels.shape[1:] != (n_mels, frames):
        return [Violation("declared_shape", f"shape {tuple(mels.shape)}, spec says (n, {n_mels}, {frames})")]
    if mels.dtype != np.float16:
        out.append(Violation("dtype", f"dtype {mels.dtype}, expected float16"))
    flat = np.asarray(mels, dtype=np.float32).reshape(len(mels), -1)
    nonfinite = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if len(nonfinite):
        out.append(Violation("finite", f"NaN/inf in clips at rows {_examples(nonfinite.tolist())}"))
    # silent: every bin within 1 nat of log(floor) — nothing but the floor
    silent = np.flatnonzero(np.nanmax(flat, axis=1) < np.log(log_floor) + 1.0)
    if len(silent):
        out.append(Violation("non_silent", f"silent clips at rows {_examples(silent.tolist())}"))
    return out
