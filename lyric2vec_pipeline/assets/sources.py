"""Where tracks come from: the embedded songbook, or a user manifest (one ingest batch per partition).

Both write `sources/<partition>.parquet` in one shape; `tracks` validates it. Each source asset
does nothing for the other's partitions (it reports `applicable: False`).
"""


import json
import time
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from lyric2vec_models.artifacts import atomic_path, read_json
from lyric2vec_pipeline.ingest import read_manifest
from lyric2vec_pipeline.metadata import md_table
from lyric2vec_pipeline.resources import LyricHome
from lyric2vec_pipeline.songbook.build import SongbookConfig, build_partition
from lyric2vec_pipeline.songbook.corpus import MAIN_PARTITIONS, OTHER_PARTITION
from lyric2vec_pipeline.songbook.render import DEFAULT_PROGRAMS, RenderConfig

catalogue_partitions = dg.DynamicPartitionsDefinition(name="catalogue")
SONGBOOK_PREFIX, USER_PREFIX = "songbook-", "user-"
SONGBOOK_PARTITION_KEYS = [SONGBOOK_PREFIX + p for p in (*MAIN_PARTITIONS, OTHER_PARTITION)]


class SongbookSourceConfig(dg.Config):
    limit: int = Field(0, description="Keep only the first N works per partition (0 = all).")
    vocals: bool = Field(True, description="Add the chanted espeak-ng vocal track at the word onsets.")
    programs: list[str] = Field(list(DEFAULT_PROGRAMS), description="GM programs rendered per work.")
    seconds: float = Field(30.0, description="Length of each rendered clip in seconds.")
    soundfont: str = Field("", description="Path to an .sf2 (empty = TimGM6mb.sf2 from pretty_midi).")


CLIP_STRUCT = pl.Struct({"clip_id": pl.Utf8, "track_id": pl.Utf8, "program_name": pl.Utf8, "audio_path": pl.Utf8})
SONGBOOK_SOURCE_SCHEMA = {
    **{c: pl.Utf8 for c in ("track_id", "title", "artist", "genre", "language", "key", "mode", "meter")},
    "parts": pl.Int64, "license": pl.Utf8, "source": pl.Utf8, "lyrics": pl.Utf8, "duration_s": pl.Float64,
    "source_kind": pl.Utf8, "words": pl.Utf8, "clips": pl.List(CLIP_STRUCT), "error": pl.Utf8, "error_detail": pl.Utf8,
}


def _write_source(home: LyricHome, partition: str, df: pl.DataFrame) -> Path:
    target = home.path("sources", f"{partition}.parquet")
    with atomic_path(target) as tmp:
        df.write_parquet(tmp)
    return target


@dg.asset(partitions_def=catalogue_partitions, group_name="sources", kinds={"python", "parquet"})
def songbook_sources(context: dg.AssetExecutionContext, config: SongbookSourceConfig, home: LyricHome) -> dg.MaterializeResult:
    """The songbook: music21's public-domain scores with lyrics, parsed and rendered to audio offline."""
    partition = context.partition_key
    if not partition.startswith(SONGBOOK_PREFIX):
        return dg.MaterializeResult(metadata={"applicable": False})
    collection = partition.removeprefix(SONGBOOK_PREFIX)
    cfg = SongbookConfig(
        render=RenderConfig(seconds=config.seconds, soundfont=config.soundfont, vocals=config.vocals),
        programs=tuple(config.programs),
        limit=config.limit,
    )
    t0 = time.perf_counter()
    results = build_partition(collection, home.path("songbook", "audio"), cfg)
    rows = []
    for r in results:
        work = r.get("work") or {"track_id": r.get("track_id")}
        row = {
            **work,
            "source_kind": "songbook",
            "source": work.get("source") or f"music21 core corpus: {r['rel_path']}",
            "words": json.dumps(r.get("words", []), ensure_ascii=False),
            "clips": r.get("clips", []),
            "error": r.get("error"),
            "error_detail": r.get("detail"),
        }
        rows.append({c: row.get(c) for c in SONGBOOK_SOURCE_SCHEMA})
    df = pl.DataFrame(rows, schema=SONGBOOK_SOURCE_SCHEMA)
    path = _write_source(home, partition, df)
    n_err = sum(r["error"] is not None for r in rows)
    n_clips = sum(len(r["clips"]) for r in rows)
    return dg.MaterializeResult(
        metadata={
            "applicable": True,
            "works": len(rows),
            "works_with_errors": n_err,
            "clips_rendered": n_clips,
            "programs": ", ".join(cfg.programs),
            "vocals": cfg.render.vocals,
            "seconds": round(time.perf_counter() - t0, 1),
            "path": dg.MetadataValue.path(str(path)),
            "preview": md_table(df.select("track_id", "title", "artist", "error")),
        }
    )


def register_user_batch(home: LyricHome, manifest: Path, batch: str, rows: tuple[int, int] | None = None) -> str:
    """Record which manifest (and row range) a user batch partition reads. Returns the partition key."""
    key = USER_PREFIX + batch
    spec = {"manifest": str(Path(manifest).resolve()), "rows": list(rows) if rows else None}
    with atomic_path(home.path("user_batches", f"{key}.json")) as tmp:
        tmp.write_text(json.dumps(spec, indent=2))
    return key


@dg.asset(partitions_def=catalogue_partitions, group_name="sources", kinds={"python", "parquet"})
def user_manifest(context: dg.AssetExecutionContext, home: LyricHome) -> dg.MaterializeResult:
    """A user catalogue: the rows of a manifest (CSV, JSONL or Parquet) registered as an ingest batch."""
    partition = context.partition_key
    if not partition.startswith(USER_PREFIX):
        return dg.MaterializeResult(metadata={"applicable": False})
    spec = read_json(home.path("user_batches", f"{partition}.json"))
    manifest_path = Path(spec["manifest"])
    df = read_manifest(manifest_path)  # raises ManifestError naming the file for a wholly bad manifest
    if spec.get("rows"):
        start, end = spec["rows"]
        df = df.filter((pl.col("row") >= start) & (pl.col("row") < end))
    df = df.with_columns(
        pl.lit(str(manifest_path)).alias("manifest_path"), pl.lit("user").alias("source_kind")
    )
    path = _write_source(home, partition, df)
    return dg.MaterializeResult(
        metadata={
            "applicable": True,
            "manifest": str(manifest_path),
            "rows": len(df),
            "path": dg.MetadataValue.path(str(path)),
            "preview": md_table(df.select("track_id", "title", "artist", "audio_path", "license")),
        }
    )
