"""The catalogue: tracks (DuckDB), lyrics (parquet) and spectrograms (float16 on disk), per partition."""


import functools
import hashlib
import json
import time

import dagster as dg
import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from data_contracts.contracts import CLIPS_SCHEMA, QUARANTINE_SCHEMA, TRACKS_SCHEMA
from lyric2vec_models.artifacts import atomic_dir, atomic_path, write_json_atomic
from lyric2vec_models.audio import AudioError, LogMel, SpectrogramSpec, decode_audio, fixed_windows
from lyric2vec_pipeline.assets.sources import catalogue_partitions, songbook_sources, user_manifest
from lyric2vec_pipeline.ingest import IngestLimits, audio_error_code, validate_manifest
from lyric2vec_pipeline.metadata import md_image, md_table, png_bytes, spectrogram_figure
from lyric2vec_pipeline.resources import LyricHome, refresh_dimensions, replace_partition
from lyric2vec_pipeline.songbook.build import close_pool, default_signals, worker_context

SPEC = SpectrogramSpec()
SPECTROGRAM_WORKERS = 2  # processes, one torch thread each


def _file_mels(args: tuple[str, list[int]]) -> tuple[dict[int, np.ndarray], AudioError | None]:
    """Decode one audio file and return {window: float16 log-mel (n_mels, clip_frames)} for the asked windows."""
    path, wanted = args
    torch.set_num_threads(1)
    try:
        wave = decode_audio(path, SPEC.sample_rate)
    except AudioError as exc:
        return {}, exc
    windows = fixed_windows(wave, SPEC.clip_samples)
    logmel = _logmel()
    return {w: logmel(windows[w]).numpy().astype(np.float16) for w in wanted if w < len(windows)}, None


@functools.lru_cache(maxsize=1)
def _logmel() -> LogMel:
    return LogMel(SPEC)


def _frame(rows: list[dict], schema: dict[str, str]) -> pl.DataFrame:
    cols = [c for c in schema]
    if not rows:
        return pl.DataFrame({c: [] for c in cols})
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], infer_schema_length=None)


def _windows_for(duration_s: float) -> int:
    """How many fixed windows `fixed_windows` will cut from audio of this length (at least 1)."""
    n = int(round(duration_s * SPEC.sample_rate))
    w = SPEC.clip_samples
    full, rest = divmod(n, w)
    return max(1, full + (1 if rest >= 0.5 * w else 0)) if n >= w else 1


def _songbook_rows(src: pl.DataFrame, partition: str) -> tuple[list[dict], list[dict], list[dict]]:
    tracks, clips, quarantine = [], [], []
    seen: set[str] = set()
    for r in src.iter_rows(named=True):
        if r["error"]:
            quarantine.append({"track_id": r["track_id"], "source": r["source"], "reason": r["error"], "detail": r["error_detail"]})
            continue
        if r["track_id"] in seen:  # the same work shipped twice (e.g. as .mxl and .xml)
            quarantine.append({"track_id": r["track_id"], "source": r["source"], "reason": "duplicate_track_id",
                               "detail": "the same work appears earlier in this partition under another file"})
            continue
        seen.add(r["track_id"])
        tracks.append({**r, "has_lyrics": bool(r["lyrics"]), "partition": partition})
        for c in r["clips"]:
            clips.append({**c, "window": 0, "partition": partition})
    return tracks, clips, quarantine


def _user_rows(src: pl.DataFrame, partition: str, existing: set[str]) -> tuple[list[dict], list[dict], list[dict]]:
    from pathlib import Path

    manifest_path = Path(src["manifest_path"][0]) if len(src) else Path("manifest")
    good, bad = validate_manifest(src, manifest_path, existing, IngestLimits())
    tracks, clips = [], []
    for g in good:
        tracks.append({**g, "source_kind": "user", "partition": partition, "has_lyrics": g["lyrics"] is not None,
                       "key": None, "mode": None, "meter": None, "parts": None})
        for w in range(_windows_for(g["duration_s"])):
            clips.append({"clip_id": f"{g['track_id']}.w{w}", "track_id": g["track_id"], "program_name": "original",
                          "audio_path": g["audio_path"], "window": w, "partition": partition})
    return tracks, clips, bad


@dg.asset(
    partitions_def=catalogue_partitions,
    deps=[songbook_sources, user_manifest],
    group_name="catalogue",
    kinds={"duckdb"},
)
def tracks(context: dg.AssetExecutionContext, home: LyricHome) -> dg.MaterializeResult:
    """Validated tracks, their audio clips and the quarantine (bad rows with a reason) in DuckDB."""
    partition = context.partition_key
    t0 = time.perf_counter()
    src = pl.read_parquet(home.path("sources", f"{partition}.parquet"))
    with home.connect() as con:
        existing = {r[0] for r in con.execute("SELECT track_id FROM tracks WHERE partition <> ?", [partition]).fetchall()}
    if len(src) and src["source_kind"][0] == "user":
        rows, clips, bad = _user_rows(src, partition, existing)
    else:
        rows, clips, bad = _songbook_rows(src, partition)
        dup = [r for r in rows if r["track_id"] in existing]
        rows = [r for r in rows if r["track_id"] not in existing]
        bad += [{"track_id": r["track_id"], "source": r["source"], "reason": "duplicate_track_id",
                 "detail": "track_id already in another partition"} for r in dup]
    for b in bad:
        b.update(partition=partition, stage="tracks")
    _stage_texts(home, partition, rows)
    tracks_df, clips_df = _frame(rows, TRACKS_SCHEMA), _frame([c for c in clips if c["track_id"] in {r["track_id"] for r in rows}], CLIPS_SCHEMA)
    quarantine_df = _frame(bad, QUARANTINE_SCHEMA)
    with home.connect() as con:
        con.execute("BEGIN TRANSACTION")
        replace_partition(con, "tracks", partition, tracks_df)
        replace_partition(con, "clips", partition, clips_df)
        con.execute("DELETE FROM quarantine WHERE partition = ?", [partition])  # every stage re-runs after tracks
        replace_partition(con, "quarantine", partition, quarantine_df)
        refresh_dimensions(con)
        con.execute("COMMIT")
    reasons = quarantine_df.group_by("reason").len().sort("len", descending=True) if len(quarantine_df) else pl.DataFrame()
    return dg.MaterializeResult(
        metadata={
            "tracks": len(tracks_df),
            "with_lyrics": int(tracks_df["has_lyrics"].sum()) if len(tracks_df) else 0,
            "instrumentals": int((~tracks_df["has_lyrics"]).sum()) if len(tracks_df) else 0,
            "clips": len(clips_df),
            "quarantined": len(quarantine_df),
            "quarantine_reasons": md_table(reasons),
            "seconds": round(time.perf_counter() - t0, 2),
            "database": dg.MetadataValue.path(str(home.db_path)),
            "preview": md_table(tracks_df.select("track_id", "title", "artist", "genre", "language", "license")),
        }
    )


def _stage_texts(home: LyricHome, partition: str, rows: list[dict]) -> None:
    """Raw lyrics and word onsets of the accepted tracks, for the lyrics asset to clean."""
    staged = pl.DataFrame(
        [{"track_id": r["track_id"], "lyrics": r.get("lyrics"), "words": r.get("words") or "[]"} for r in rows],
        schema={"track_id": pl.Utf8, "lyrics": pl.Utf8, "words": pl.Utf8},
    )
    with atomic_path(home.path("staging", f"{partition}.texts.parquet")) as tmp:
        staged.write_parquet(tmp)


@dg.asset(partitions_def=catalogue_partitions, deps=[tracks], group_name="catalogue", kinds={"parquet"})
def lyrics(context: dg.AssetExecutionContext, home: LyricHome) -> dg.MaterializeResult:
    """Cleaned UTF-8 lyrics per track with word onsets (NULL lyrics = instrumental)."""
    partition = context.partition_key
    t0 = time.perf_counter()
    tracks_df = home.table("tracks", "WHERE partition = ? ORDER BY track_id", [partition])
    staged = pl.read_parquet(home.path("staging", f"{partition}.texts.parquet"))
    words_by_id = dict(zip(staged["track_id"], staged["words"], strict=True))
    lyrics_by_id = dict(zip(staged["track_id"], staged["lyrics"], strict=True))
    rows = []
    for t in tracks_df.iter_rows(named=True):
        words = json.loads(words_by_id.get(t["track_id"]) or "[]")
        text = None
        if t["has_lyrics"]:
            raw = lyrics_by_id.get(t["track_id"]) or ""
            text = "\n".join(" ".join(line.split()) for line in raw.splitlines() if line.strip())
        rows.append({
            "track_id": t["track_id"],
            "lyrics": text or None,
            "language": t["language"],
            "n_words": len(text.split()) if text else 0,
            "n_verses": len(text.splitlines()) if text else 0,
            "words": [{"word": w["word"], "onset_s": float(w["onset_s"]), "verse": int(w["verse"])} for w in words],
        })
    schema = {"track_id": pl.Utf8, "lyrics": pl.Utf8, "language": pl.Utf8, "n_words": pl.Int64, "n_verses": pl.Int64,
              "words": pl.List(pl.Struct({"word": pl.Utf8, "onset_s": pl.Float64, "verse": pl.Int64}))}
    df = pl.DataFrame(rows, schema=schema)
    target = home.path("lyrics", f"{partition}.parquet")
    with atomic_path(target) as tmp:
        df.write_parquet(tmp)
    return dg.MaterializeResult(
        metadata={
            "tracks": len(df),
            "with_lyrics": int(df["lyrics"].is_not_null().sum()),
            "words": int(df["n_words"].sum()) if len(df) else 0,
            "bytes": target.stat().st_size,
            "seconds": round(time.perf_counter() - t0, 2),
            "path": dg.MetadataValue.path(str(target)),
            "preview": md_table(df.select("track_id", "language", "n_words", "lyrics")),
        }
    )


@dg.asset(partitions_def=catalogue_partitions, deps=[tracks], group_name="catalogue", kinds={"numpy"})
def spectrograms(context: dg.AssetExecutionContext, home: LyricHome) -> dg.MaterializeResult:
    """Log-mel float16 per clip (n_clips, n_mels, frames) + the clip index + the spectrogram spec."""
    partition = context.partition_key
    t0 = time.perf_counter()
    clips_df = home.table("clips", "WHERE partition = ? ORDER BY clip_id", [partition])
    mels, index, bad = [], [], []
    by_file = clips_df.group_by("audio_path", maintain_order=True).agg(pl.col("clip_id"), pl.col("track_id"), pl.col("window"), pl.col("program_name"))
    files = list(by_file.iter_rows(named=True))
    with worker_context().Pool(SPECTROGRAM_WORKERS, initializer=default_signals) as pool:
        results = pool.imap(_file_mels, [(r["audio_path"], sorted(set(r["window"]))) for r in files], chunksize=4)
        for r, (windows, error) in tqdm(zip(files, results, strict=True), total=len(files), desc=f"spectrograms/{partition}", unit="file"):
            if error is not None:
                # `tracks` decoded user audio already; this catches files changed or lost since then
                bad.append({"partition": partition, "stage": "spectrograms", "track_id": r["track_id"][0],
                            "source": r["audio_path"], "reason": audio_error_code(error), "detail": str(error)})
                continue
            for clip_id, track_id, w, program in zip(r["clip_id"], r["track_id"], r["window"], r["program_name"], strict=True):
                if w not in windows:
                    continue
                mel = windows[w]
                index.append({"clip_id": clip_id, "track_id": track_id, "row": len(mels), "program": program,
                              "program_name": program, "window": w, "sha256": hashlib.sha256(mel.tobytes()).hexdigest()})
                mels.append(mel)
        close_pool(pool)
    arr = np.stack(mels) if mels else np.zeros((0, SPEC.n_mels, SPEC.clip_frames), dtype=np.float16)
    out_dir = home.path("spectrograms", partition)
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "mels.npy", arr)
        pl.DataFrame(index, schema={"clip_id": pl.Utf8, "track_id": pl.Utf8, "row": pl.Int64, "program": pl.Utf8,
                                    "program_name": pl.Utf8, "window": pl.Int64, "sha256": pl.Utf8}).write_parquet(tmp / "clips.parquet")
    write_json_atomic(home.path("spectrograms", "spec.json"), SPEC.to_dict())
    if bad:  # tracks whose audio cannot be used leave the catalogue and wait in quarantine
        bad_ids = sorted({b["track_id"] for b in bad})
        with home.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM quarantine WHERE partition = ? AND stage = 'spectrograms'", [partition])
            con.register("_bad", pl.DataFrame(bad).select(list(QUARANTINE_SCHEMA)).to_arrow())
            con.execute(f"INSERT INTO quarantine SELECT {', '.join(QUARANTINE_SCHEMA)} FROM _bad")
            con.execute("DELETE FROM clips WHERE list_contains(?, track_id)", [bad_ids])
            con.execute("DELETE FROM tracks WHERE list_contains(?, track_id)", [bad_ids])
            refresh_dimensions(con)
            con.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    hop_s = SPEC.hop_length / SPEC.sample_rate
    preview = md_image(png_bytes(spectrogram_figure(list(arr[:3]), [i["clip_id"] for i in index[:3]], hop_s)), "log-mel") if len(arr) else dg.MetadataValue.md("(no clips)")
    return dg.MaterializeResult(
        metadata={
            "clips": len(arr),
            "quarantined_files": len(bad),
            "shape": str(tuple(arr.shape)),
            "bytes": int(arr.nbytes),
            "seconds": round(elapsed, 1),
            "clips_per_second": round(len(arr) / elapsed, 1) if elapsed else 0.0,
            "spec": dg.MetadataValue.json(SPEC.to_dict()),
            "preview": preview,
            "path": dg.MetadataValue.path(str(out_dir)),
        }
    )
