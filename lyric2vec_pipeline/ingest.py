"""User catalogues: read a manifest (CSV, JSONL or Parquet) and sort its rows into good and quarantined.

A wholly bad manifest (unreadable, unknown format, a required column absent) raises ManifestError
naming the file and the problem. A bad row never stops the others: it is returned with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import soundfile as sf

from lyric2vec_models.audio import AudioError, decode_audio

REQUIRED_COLUMNS = ("track_id", "title", "audio_path", "license")
OPTIONAL_COLUMNS = ("artist", "genre", "lyrics", "lyrics_path", "language")


class ManifestError(ValueError):
    """The manifest as a whole cannot be used."""


@dataclass(frozen=True)
class IngestLimits:
    max_audio_bytes: int = 200 * 1024 * 1024  # a larger file is quarantined as too large
    max_audio_seconds: float = 20 * 60.0  # longer audio is quarantined (cut into windows below that)
    max_lyrics_bytes: int = 200_000  # lyrics files larger than this are refused


def read_manifest(path: str | Path) -> pl.DataFrame:
    """Read a manifest into a frame of strings with every known column present (NULL when absent)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pl.read_csv(path, infer_schema=False)
        elif suffix in (".jsonl", ".ndjson"):
            df = pl.read_ndjson(path, infer_schema_length=None)
        elif suffix == ".parquet":
            df = pl.read_parquet(path)
        else:
            raise ManifestError(f"{path}: unknown manifest format {suffix!r}; use .csv, .jsonl or .parquet")
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError(f"{path}: cannot read manifest ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{path}: required column(s) {missing} absent; a manifest needs {list(REQUIRED_COLUMNS)} "
            f"and may have {list(OPTIONAL_COLUMNS)}"
        )
    if "lyrics" not in df.columns and "lyrics_path" not in df.columns:
        raise ManifestError(f"{path}: needs a 'lyrics' or a 'lyrics_path' column (empty for instrumentals)")
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(col))
    cols = list(REQUIRED_COLUMNS) + list(OPTIONAL_COLUMNS)
    return df.select([pl.col(c).cast(pl.Utf8) for c in cols]).with_row_index("row")


def _blank(value: str | None) -> bool:
    return value is None or not str(value).strip()


def _read_lyrics(row: dict, base: Path, limits: IngestLimits) -> tuple[str | None, str | None, str]:
    """-> (lyrics or None for an instrumental, error reason or None, error detail)."""
    if not _blank(row["lyrics"]):
        return row["lyrics"].strip(), None, ""
    if _blank(row["lyrics_path"]):
        return None, None, ""
    path = (base / row["lyrics_path"]).resolve()
    if not path.is_file():
        return None, "missing_lyrics_file", f"{path} does not exist"
    if path.stat().st_size > limits.max_lyrics_bytes:
        return None, "lyrics_file_too_large", f"{path} is over {limits.max_lyrics_bytes} bytes"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, "lyrics_not_utf8", f"{path}: {exc}"
    return (text.strip() or None), None, ""


def _probe_audio(path: Path, limits: IngestLimits) -> tuple[str | None, str, float]:
    """-> (error reason or None, detail, duration seconds). The header is checked before decoding."""
    if not path.is_file():
        return "missing_audio_file", f"{path} does not exist", 0.0
    size = path.stat().st_size
    if size == 0:
        return "empty_audio_file", f"{path} is 0 bytes", 0.0
    if size > limits.max_audio_bytes:
        return "audio_file_too_large", f"{path} is {size} bytes, limit {limits.max_audio_bytes}", 0.0
    try:
        info = sf.info(str(path))
    except Exception as exc:
        return "undecodable_audio", f"{path}: {exc}", 0.0
    if "should be" in info.extra_info:  # libsndfile: the header promises more data than the file has
        return "truncated_audio", f"{path}: header and data length disagree (file cut short)", 0.0
    if info.frames <= 0:
        return "empty_audio", f"{path}: no audio frames", 0.0
    if info.duration > limits.max_audio_seconds:
        return "audio_too_long", f"{path}: {info.duration:.0f} s, limit {limits.max_audio_seconds:.0f} s", 0.0
    try:  # a full decode at the native rate: catches data cut short after a good header, and silence
        decode_audio(path, info.samplerate)
    except AudioError as exc:
        return audio_error_code(exc), str(exc), 0.0
    return None, "", float(info.duration)


def audio_error_code(exc: AudioError) -> str:
    """Short quarantine reason for an AudioError from decode_audio."""
    text = str(exc)
    for needle, code in (("silent", "silent_audio"), ("truncated", "truncated_audio"), ("zero samples", "empty_audio")):
        if needle in text:
            return code
    return "undecodable_audio"


def validate_manifest(
    manifest: pl.DataFrame,
    manifest_path: Path,
    existing_ids: set[str] | frozenset[str] = frozenset(),
    limits: IngestLimits = IngestLimits(),
) -> tuple[list[dict], list[dict]]:
    """-> (good rows, quarantined rows). Relative paths resolve against the manifest's directory."""
    base = manifest_path.parent
    good: list[dict] = []
    bad: list[dict] = []
    seen: set[str] = set(existing_ids)
    for row in manifest.iter_rows(named=True):
        source = f"{manifest_path}:row {row['row'] + 1}"
        track_id = (row["track_id"] or "").strip()

        def refuse(reason: str, detail: str, track_id: str = track_id, source: str = source) -> None:
            bad.append({"track_id": track_id, "source": source, "reason": reason, "detail": detail})

        if not track_id:
            refuse("empty_track_id", "track_id is empty")
            continue
        if track_id in seen:
            refuse("duplicate_track_id", f"track_id {track_id!r} already used by an earlier row or batch")
            continue
        seen.add(track_id)
        if _blank(row["license"]):
            refuse("missing_license", "no license given: tracks must record their license")
            continue
        if _blank(row["title"]):
            refuse("missing_title", "title is empty")
            continue
        if _blank(row["audio_path"]):
            refuse("missing_audio_path", "audio_path is empty")
            continue
        audio_path = (base / row["audio_path"]).resolve()
        reason, detail, duration = _probe_audio(audio_path, limits)
        if reason:
            refuse(reason, detail)
            continue
        lyrics, reason, detail = _read_lyrics(row, base, limits)
        if reason:
            refuse(reason, detail)
            continue
        good.append(
            {
                "track_id": track_id,
                "title": row["title"].strip(),
                "artist": (row["artist"] or "").strip() or "unknown",
                "genre": (row["genre"] or "").strip() or "unknown",
                "language": (row["language"] or "").strip() or "unknown",
                "license": row["license"].strip(),
                "source": source,
                "lyrics": lyrics,
                "audio_path": str(audio_path),
                "duration_s": duration,
            }
        )
    return good, bad
