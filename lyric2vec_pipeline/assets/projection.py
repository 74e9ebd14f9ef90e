"""umap_projection: 2-D UMAP maps of the fused (and audio) song vectors, for the dashboard and the Dagster UI.

Reads `embeddings.parquet` (one L2-normalised vector per track, see docs/INTERFACES.md) and writes
`umap/projection.parquet` (`track_id, x, y, title, artist, genre, language, split`, plus `x_audio, y_audio`
for the audio-only map) and `umap/projection.png`, both swapped in as one directory with a manifest.
"""

import time
import warnings
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from lyric2vec_models.artifacts import atomic_dir, file_entry, write_json_atomic
from lyric2vec_pipeline.metadata import md_image, md_table, png_bytes
from lyric2vec_pipeline.resources import LyricHome

LABEL_COLUMNS = (
    "title",
    "artist",
    "genre",
    "language",
    "split",
)  # carried into the projection for hover/colour
MAX_LEGEND = 12  # genres beyond this are drawn grey as "other" in the PNG


class ProjectionConfig(dg.Config):
    seed: int = Field(
        default=0, description="Seed of UMAP's random state: the same vectors give the same map."
    )
    n_neighbors: int = Field(default=15, description="UMAP neighbourhood size; capped at n_tracks - 1.")
    min_dist: float = Field(default=0.1, description="UMAP min_dist: how tightly points may pack in 2-D.")
    project_audio: bool = Field(default=True, description="Also map z_audio (columns x_audio, y_audio).")


def stack_vectors(column: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """A list<float32> column -> (N, d) float32 and an (N,) bool mask of rows that have a vector."""
    present = column.is_not_null().to_numpy()
    rows = column.to_list()
    dim = next((len(v) for v in rows if v is not None), 0)
    out = np.zeros((len(rows), dim), dtype=np.float32)
    for i, v in enumerate(rows):
        if v is not None:
            out[i] = v
    return out, present


def umap_2d(vectors: np.ndarray, seed: int, n_neighbors: int, min_dist: float) -> tuple[np.ndarray, dict]:
    """(N, d) unit vectors -> (N, 2) float32 coordinates and the parameters really used.

    Cosine metric (the space is searched by cosine). Small sets: n_neighbors is capped at N - 1, and
    below 4 points UMAP's spectral layout is undefined, so the first two PCA axes are used instead.
    """
    n = len(vectors)
    if n < 4:
        centred = vectors - vectors.mean(0, keepdims=True)
        axes = (
            np.linalg.svd(centred, full_matrices=False)[2][:2] if n > 1 else np.zeros((2, vectors.shape[1]))
        )
        xy = np.zeros((n, 2), np.float32)
        xy[:, : len(axes)] = centred @ axes.T
        return xy, {"method": "pca", "n_neighbors": 0}
    import umap  # heavy import (numba): only when a projection is really made

    k = int(max(2, min(n_neighbors, n - 1)))
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,  # also makes UMAP single-threaded, which keeps the map reproducible
        init="spectral" if n > k + 1 else "random",  # spectral init needs more points than neighbours
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs overridden by random_state; small-graph notices
        xy = reducer.fit_transform(np.asarray(vectors, np.float32))
    return np.asarray(xy, np.float32), {"method": "umap", "n_neighbors": k, "min_dist": min_dist}


def trustworthiness(vectors: np.ndarray, xy: np.ndarray, k: int) -> float | None:
    """How well the 2-D map keeps each point's cosine neighbours (1.0 = all kept), or None for tiny sets."""
    if len(vectors) < 2 * k + 2 or k < 1:
        return None
    from sklearn.manifold import trustworthiness as tw

    return float(tw(vectors, xy, n_neighbors=k, metric="cosine"))


def projection_figure(df: pl.DataFrame, title: str):
    """Scatter of x, y coloured by genre (the most common MAX_LEGEND genres; the rest grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    genres = df["genre"].fill_null("(none)")
    top = genres.value_counts(sort=True)["genre"].head(MAX_LEGEND).to_list()
    cmap = plt.get_cmap("tab10" if len(top) <= 10 else "tab20")
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    other = ~genres.is_in(top).to_numpy()
    if other.any():
        ax.scatter(x[other], y[other], s=10, c="lightgrey", label="other")
    for i, g in enumerate(top):
        sel = (genres == g).to_numpy()
        ax.scatter(x[sel], y[sel], s=14, color=cmap(i % 20), label=f"{g} ({int(sel.sum())})")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def build_projection(embeddings: pl.DataFrame, config: ProjectionConfig) -> tuple[pl.DataFrame, dict]:
    """The projection frame and a summary (parameters, counts, timings, trustworthiness)."""
    t0 = time.perf_counter()
    fused, has_fused = stack_vectors(embeddings["z_fused"])
    if not has_fused.all():
        raise ValueError(
            f"embeddings: {int((~has_fused).sum())} rows have no z_fused; rebuild the embeddings"
        )
    xy, params = umap_2d(fused, config.seed, config.n_neighbors, config.min_dist)
    labels = {c: embeddings[c] if c in embeddings.columns else pl.Series(c, [None] * len(embeddings), pl.Utf8)
              for c in LABEL_COLUMNS}  # fmt: skip
    df = pl.DataFrame({"track_id": embeddings["track_id"], "x": xy[:, 0], "y": xy[:, 1], **labels})
    summary = {"n_tracks": len(df), "dim": int(fused.shape[1]), **params,
               "trustworthiness": trustworthiness(fused, xy, min(5, params["n_neighbors"]))}  # fmt: skip
    if config.project_audio and "z_audio" in embeddings.columns:
        audio, has_audio = stack_vectors(embeddings["z_audio"])
        if has_audio.all():
            xy_a, _ = umap_2d(audio, config.seed, config.n_neighbors, config.min_dist)
            df = df.with_columns(x_audio=pl.Series(xy_a[:, 0]), y_audio=pl.Series(xy_a[:, 1]))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return df, summary


def write_projection(df: pl.DataFrame, png: bytes, directory: Path, manifest: dict) -> None:
    """projection.parquet + projection.png + manifest.json, swapped in together (never half-written)."""
    with atomic_dir(directory) as tmp:
        df.write_parquet(tmp / "projection.parquet")
        (tmp / "projection.png").write_bytes(png)
        files = {name: file_entry(tmp / name) for name in ("projection.parquet", "projection.png")}
        write_json_atomic(tmp / "manifest.json", manifest | {"files": files})
        for path in (tmp, tmp / "manifest.json"):  # mkdtemp/mkstemp make them private; readers may be others
            path.chmod(0o755 if path.is_dir() else 0o644)


@dg.asset(deps=[dg.AssetKey("embeddings")], group_name="serving", kinds={"umap", "parquet"})
def umap_projection(
    context: dg.AssetExecutionContext, config: ProjectionConfig, home: LyricHome
) -> dg.MaterializeResult:
    """2-D UMAP coordinates of every track's fused vector (and its audio vector) with a picture."""
    src = home.path("embeddings.parquet")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no embeddings yet; materialize the embeddings asset first")
    embeddings = pl.read_parquet(src)
    if not len(embeddings):
        raise ValueError(f"{src}: no rows; the embeddings asset wrote an empty table")
    df, summary = build_projection(embeddings, config)
    versions = embeddings["model_version"].unique().to_list() if "model_version" in embeddings.columns else []
    model_version = versions[0] if len(versions) == 1 else ",".join(map(str, versions))
    png = png_bytes(projection_figure(df, f"UMAP of fused vectors: {len(df)} tracks, {model_version}"))
    write_projection(
        df, png, home.path("umap"), {"model_version": model_version, "seed": config.seed, **summary}
    )
    context.log.info(
        f"umap_projection: {len(df)} tracks mapped in {summary['seconds']} s -> {home.path('umap')}"
    )
    meta = {k: v for k, v in summary.items() if v is not None and not isinstance(v, str)}
    return dg.MaterializeResult(
        metadata={
            **meta,
            "method": summary["method"],
            "model_version": model_version,
            "path": dg.MetadataValue.path(str(home.path("umap", "projection.parquet"))),
            "png_bytes": len(png),
            "projection": md_image(png, "UMAP projection"),
            "preview": md_table(df.select("track_id", "x", "y", "title", "artist", "genre"), max_rows=8),
        }
    )


projection_assets = [umap_projection]
