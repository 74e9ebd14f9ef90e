"""Serving artifacts: every track's embeddings (parquet) and one FAISS index per gallery.

Both read the promoted model (models/current, set by the eval_report check), so a model that
failed evaluation never reaches the indexes the service loads.
"""

import time

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from lyric2vec_models.artifacts import ArtifactError, atomic_path, read_json
from lyric2vec_models.index import IndexConfig, build_gallery, load_gallery, recall_vs_exact, save_gallery
from lyric2vec_models.inference import Lyric2VecEncoder
from lyric2vec_models.train import load_model
from lyric2vec_pipeline.metadata import md_table
from lyric2vec_pipeline.resources import LyricHome

GALLERIES = {"audio": "z_audio", "lyrics": "z_text", "fused": "z_fused"}  # gallery -> embeddings column


def current_model_dir(home: LyricHome):
    path = home.path("models", "current")
    if not path.exists():
        raise ArtifactError(f"{path}: no promoted model; materialize trained_model and eval_report first")
    return path.resolve()


def read_catalogue_clips(home: LyricHome) -> tuple[pl.DataFrame, np.ndarray]:
    """All clips of every partition: (index frame with a global `g` row, mels (M, n_mels, F) float16)."""
    frames, mels = [], []
    offset = 0
    for part in sorted(p for p in home.path("spectrograms").iterdir() if p.is_dir() and not p.name.startswith(".")):
        idx = pl.read_parquet(part / "clips.parquet")
        arr = np.load(part / "mels.npy", mmap_mode="r")
        frames.append(idx.with_columns((pl.col("row") + offset).alias("g")))
        mels.append(arr)
        offset += len(arr)
    if not frames:
        raise ArtifactError(f"{home.path('spectrograms')}: no spectrogram partitions; materialize spectrograms")
    return pl.concat(frames), np.concatenate(mels) if len(mels) > 1 else np.asarray(mels[0])


@dg.asset(deps=[dg.AssetKey("eval_report")], group_name="serving", kinds={"parquet"})
def embeddings(home: LyricHome) -> dg.MaterializeResult:
    """z_text, z_audio, z_meta, z_fused and gates of every track, from the promoted model."""
    t0 = time.perf_counter()
    encoder = Lyric2VecEncoder.load(current_model_dir(home))
    tracks = home.table("tracks", "ORDER BY track_id")
    lyrics = pl.concat([pl.read_parquet(f) for f in sorted(home.path("lyrics").glob("*.parquet"))])
    tracks = tracks.join(lyrics.select("track_id", "lyrics"), on="track_id", how="left")
    splits_path = home.path("splits.parquet")
    if splits_path.exists():
        tracks = tracks.join(pl.read_parquet(splits_path).select("track_id", "split"), on="track_id", how="left")
    else:
        tracks = tracks.with_columns(pl.lit(None, dtype=pl.Utf8).alias("split"))
    clips, mels = read_catalogue_clips(home)

    z_clip = encoder.encode_audio_mels(mels)  # (M, d): every stored clip, windowed
    row_of = {tid: i for i, tid in enumerate(tracks["track_id"])}
    d = encoder.dim
    z_audio = np.zeros((len(tracks), d), dtype=np.float32)
    counts = np.zeros(len(tracks))
    for tid, g in zip(clips["track_id"], clips["g"], strict=True):
        if tid in row_of:  # a whole track = the mean of its clips (programs or windows), renormalised
            z_audio[row_of[tid]] += z_clip[g]
            counts[row_of[tid]] += 1
    has_audio = counts > 0
    z_audio[has_audio] /= np.linalg.norm(z_audio[has_audio], axis=1, keepdims=True)

    has_text = tracks["lyrics"].is_not_null().to_numpy()
    z_text = np.zeros((len(tracks), d), dtype=np.float32)
    if has_text.any():
        z_text[has_text] = encoder.encode_text([t for t in tracks["lyrics"] if t is not None])
    z_meta = encoder.encode_meta(tracks["artist"].to_list(), tracks["genre"].to_list())
    z_fused, gates = encoder.fuse(z_text, z_audio, z_meta, masks=(has_text, has_audio, np.ones(len(tracks), bool)))

    def col(z: np.ndarray, mask: np.ndarray | None = None) -> pl.Series:
        values = [list(map(float, v)) if mask is None or m else None for v, m in zip(z, mask if mask is not None else [True] * len(z), strict=True)]
        return pl.Series(values, dtype=pl.List(pl.Float32))

    out = tracks.select("track_id", "title", "artist", "genre", "language", "split").with_columns(
        col(z_text, has_text).alias("z_text"),
        col(z_audio, has_audio).alias("z_audio"),
        col(z_meta).alias("z_meta"),
        col(z_fused).alias("z_fused"),
        col(gates).alias("gates"),
        pl.lit(encoder.model_version).alias("model_version"),
    )
    target = home.path("embeddings.parquet")
    with atomic_path(target) as tmp:
        out.write_parquet(tmp)
    mean_gates = gates.mean(axis=0)
    return dg.MaterializeResult(
        metadata={
            "tracks": len(out),
            "with_text": int(has_text.sum()),
            "with_audio": int(has_audio.sum()),
            "clips_encoded": len(z_clip),
            "dim": d,
            "model_version": encoder.model_version,
            "mean_gates (text, audio, meta)": ", ".join(f"{g:.3f}" for g in mean_gates),
            "seconds": round(time.perf_counter() - t0, 1),
            "bytes": target.stat().st_size,
            "path": dg.MetadataValue.path(str(target)),
            "preview": md_table(out.select("track_id", "title", "split", "model_version")),
        }
    )


class FaissConfig(dg.Config):
    exact_below: int = Field(50_000, description="Galleries smaller than this get an exact flat index.")
    approximate: str = Field("hnsw", description="Index type above the threshold: 'hnsw' or 'ivf'.")
    hnsw_ef_search: int = Field(64, description="HNSW query-time beam width.")


@dg.asset(deps=[embeddings], group_name="serving", kinds={"faiss"})
def faiss_index(config: FaissConfig, home: LyricHome) -> dg.MaterializeResult:
    """indexes/{audio,lyrics,fused}: one FAISS index per gallery + manifest, each swapped in atomically."""
    emb = pl.read_parquet(home.path("embeddings.parquet"))
    index_config = IndexConfig(exact_below=config.exact_below, approximate=config.approximate,
                               hnsw_ef_search=config.hnsw_ef_search)
    version = emb["model_version"][0]
    meta: dict = {"model_version": version}
    for gallery, column in GALLERIES.items():
        rows = emb.filter(pl.col(column).is_not_null())
        vectors = np.asarray(rows[column].to_list(), dtype=np.float32)
        t0 = time.perf_counter()
        gi = build_gallery(rows["track_id"].to_numpy(), vectors, version, index_config,
                           tracks=rows.select("track_id", "title", "artist", "genre").to_arrow())
        manifest = save_gallery(gi, home.path("indexes", gallery), gallery=gallery, source="embeddings.parquet")
        meta[f"{gallery}_vectors"] = manifest["ntotal"]
        meta[f"{gallery}_type"] = manifest["index_type"]
        meta[f"{gallery}_build_seconds"] = round(time.perf_counter() - t0, 3)
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=faiss_index, description="Approximate search agrees with exact search: Recall@10 >= 0.95.")
def faiss_recall_vs_exact(home: LyricHome) -> dg.AssetCheckResult:
    emb = pl.read_parquet(home.path("embeddings.parquet"))
    recalls = {}
    for gallery, column in GALLERIES.items():
        gi = load_gallery(home.path("indexes", gallery))
        vectors = np.asarray(emb.filter(pl.col(column).is_not_null())[column].to_list(), dtype=np.float32)
        recalls[gallery] = float(recall_vs_exact(gi, vectors, k=min(10, len(vectors))))
    worst = min(recalls.values())
    return dg.AssetCheckResult(passed=worst >= 0.95, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={f"{g}_recall@10_vs_exact": r for g, r in recalls.items()})


@dg.asset_check(asset=faiss_index, description="Every index was built from the weights the service will load.")
def faiss_model_version_matches(home: LyricHome) -> dg.AssetCheckResult:
    weights = load_model(current_model_dir(home)).model_version
    versions = {g: read_json(home.path("indexes", g, "manifest.json"))["model_version"] for g in GALLERIES}
    stale = {g: v for g, v in versions.items() if v != weights}
    return dg.AssetCheckResult(passed=not stale, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"weights": weights, "stale_indexes": str(stale or "none")})


serving_assets = [embeddings, faiss_index]
serving_checks = [faiss_recall_vs_exact, faiss_model_version_matches]
