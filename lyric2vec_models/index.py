"""Gallery indexes: FAISS inner-product search over L2-normalised song vectors, saved with a manifest.

One index per gallery (audio, lyrics, fused). The type follows the size: an exact `IndexFlatIP` below
`IndexConfig.exact_below` vectors, HNSW (or IVF) above it. On normalised vectors inner product is cosine,
so scores lie in [-1, 1]. A saved gallery is a directory written atomically:

    index.faiss     faiss.write_index of the index
    ids.npy         (ntotal,) track ids, row i of the index is ids[i] (unicode array, no pickle)
    tracks.parquet  optional: track_id, title, artist, genre (what a search result shows)
    manifest.json   model_version, dim, metric, ntotal, index_type, params, sha256 + bytes of every file, built_at

`load_gallery` verifies every file against the manifest and raises ArtifactError naming the file.
Pure FAISS + numpy: no torch, no serving framework.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from lyric2vec_models.artifacts import ArtifactError, atomic_dir, file_entry, read_json, verify_files

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
TRACKS_FILE = "tracks.parquet"
MANIFEST_FILE = "manifest.json"
METRIC = "inner_product"
FORMAT_VERSION = 1
TRACK_COLUMNS = ("track_id", "title", "artist", "genre")


@dataclass
class IndexConfig:
    exact_below: int = 50_000  # galleries with fewer vectors get an exact IndexFlatIP
    approximate: str = "hnsw"  # type above the threshold: "hnsw" or "ivf"
    hnsw_m: int = 32  # HNSW graph degree (links per node); memory ~ 4*2*M bytes per vector on top of the data
    hnsw_ef_construction: int = 64  # HNSW build-time beam; higher = better graph, slower build
    hnsw_ef_search: int = 64  # HNSW query-time beam; raised to k when k is larger
    ivf_nlist: int = 0  # IVF cells; 0 = 4 * sqrt(n), rounded
    ivf_nprobe: int = 16  # IVF cells visited per query
    train_sample: int = 100_000  # vectors used to train IVF centroids (random subset, seeded)
    seed: int = 0  # seeds the IVF training sample


@dataclass
class GalleryIndex:
    """A FAISS index with its row -> track id table and its manifest."""

    index: faiss.Index
    ids: np.ndarray  # (ntotal,) track ids
    model_version: str
    index_type: str  # "flat", "hnsw" or "ivf"
    params: dict = field(default_factory=dict)  # ef_search / nprobe and build parameters
    tracks: object | None = None  # optional pyarrow.Table of TRACK_COLUMNS
    manifest: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, d) or (d,) queries -> scores (Q, k') float32 descending and ids (Q, k'), k' = min(k, ntotal).

        Queries are L2-normalised here, so scores are cosines in [-1, 1].
        """
        q = _as_matrix(queries, self.dim, "queries")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k = int(min(k, self.ntotal))
        if k < 1:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), self.ids.dtype)
        # Per-call parameters (not index attributes) so concurrent searches with different k are safe.
        if self.index_type == "hnsw":
            scores, rows = self.index.search(
                q, k, params=faiss.SearchParametersHNSW(efSearch=max(self.params["ef_search"], k))
            )
        elif self.index_type == "ivf":
            scores, rows = self.index.search(
                q, k, params=faiss.SearchParametersIVF(nprobe=self.params["nprobe"])
            )
        else:
            scores, rows = self.index.search(q, k)
        # HNSW / IVF may return fewer than k hits (-1 rows) when the beam or probed cells are too small.
        valid = rows >= 0
        ids = self.ids[np.where(valid, rows, 0)]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        return scores, ids

    def vectors(self) -> np.ndarray:
        """(ntotal, d) stored vectors (reconstructed from the index; flat storage holds them exactly)."""
        if self.index_type == "ivf":
            faiss.extract_index_ivf(self.index).make_direct_map()
        return self.index.reconstruct_n(0, self.ntotal)


# ---------------------------------------------------------------- building


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Copy of (N, d) vectors as contiguous float32 with unit L2 norm; zero or non-finite rows are an error."""
    x = np.ascontiguousarray(np.array(vectors, dtype=np.float32, copy=True))
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))[:5].tolist()
        raise ValueError(f"vectors contain NaN or infinite values (rows {bad} ...)")
    norms = np.linalg.norm(x, axis=1)
    if np.any(norms < 1e-12):
        raise ValueError(f"vectors have zero norm (rows {np.flatnonzero(norms < 1e-12)[:5].tolist()} ...)")
    faiss.normalize_L2(x)
    return x


def choose_index_type(n: int, config: IndexConfig) -> str:
    return "flat" if n < config.exact_below else config.approximate


def build_gallery(
    ids,
    vectors: np.ndarray,
    model_version: str,
    config: IndexConfig | None = None,
    tracks=None,
    index_type: str | None = None,
) -> GalleryIndex:
    """Index (N, d) vectors under their track ids; the type follows N unless `index_type` forces one."""
    config = config or IndexConfig()
    x = normalize(_as_matrix(vectors, None, "vectors"))
    ids = np.asarray(ids)
    if ids.dtype == object:
        ids = ids.astype(str)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
    if len(x) == 0:
        raise ValueError("cannot build an index over zero vectors")
    n, d = x.shape
    kind = index_type or choose_index_type(n, config)
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
        params = {"m": config.hnsw_m, "ef_construction": config.hnsw_ef_construction,
                  "ef_search": config.hnsw_ef_search}  # fmt: skip
    elif kind == "ivf":
        nlist = config.ivf_nlist or max(1, int(round(4 * np.sqrt(n))))
        nlist = max(1, min(nlist, n // 39))  # FAISS wants >= 39 training points per centroid
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(config.seed)
        sample = (
            x if n <= config.train_sample else x[np.sort(rng.choice(n, config.train_sample, replace=False))]
        )
        index.train(sample)
        index.nprobe = min(config.ivf_nprobe, nlist)
        params = {"nlist": nlist, "nprobe": index.nprobe}
    else:
        raise ValueError(f"unknown index type {kind!r}; choose flat, hnsw or ivf")
    index.add(x)
    return GalleryIndex(index, ids, model_version, kind, params, tracks=tracks)


# ---------------------------------------------------------------- saving and loading


def save_gallery(index: GalleryIndex, directory: str | Path, **extra) -> dict:
    """Write the gallery directory atomically (temp dir + rename); returns the manifest.

    `extra` goes into the manifest (e.g. gallery="audio", source="embeddings.parquet").
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        faiss.write_index(index.index, str(tmp / INDEX_FILE))
        np.save(tmp / IDS_FILE, index.ids, allow_pickle=False)
        files = [INDEX_FILE, IDS_FILE]
        if index.tracks is not None:
            _write_tracks(index.tracks, tmp / TRACKS_FILE)
            files.append(TRACKS_FILE)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_version": index.model_version,
            "dim": index.dim,
            "metric": METRIC,
            "ntotal": index.ntotal,
            "index_type": index.index_type,
            "params": index.params,
            "faiss_version": faiss.__version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {name: file_entry(tmp / name) for name in files},
        } | extra
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    index.manifest = manifest
    return manifest


def load_gallery(
    directory: str | Path,
    model_version: str | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
    mmap: bool = False,
) -> GalleryIndex:
    """Load and verify a saved gallery; ArtifactError names the file that is missing, truncated or altered.

    `model_version`, when given, must equal the manifest's (vectors from other weights are not comparable).
    `mmap` maps index.faiss read-only instead of reading it (large flat / HNSW indexes).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    manifest = read_json(manifest_path)
    for key in ("model_version", "dim", "metric", "ntotal", "index_type", "files"):
        if key not in manifest:
            raise ArtifactError(
                f"{manifest_path}: no {key!r}; not a lyric2vec gallery manifest, rebuild the index"
            )
    if manifest["metric"] != METRIC:
        raise ArtifactError(f"{manifest_path}: metric {manifest['metric']!r}, expected {METRIC!r}")
    for name in (INDEX_FILE, IDS_FILE):
        if name not in manifest["files"]:
            raise ArtifactError(f"{manifest_path}: does not list {name}; rebuild the index")
    verify_files(directory, manifest["files"])
    check_model_version(manifest, model_version, manifest_path)

    index_path = directory / INDEX_FILE
    try:
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(index_path), flags)
    except Exception as exc:  # faiss raises RuntimeError with a C++ message on bad files
        raise ArtifactError(f"{index_path}: cannot read FAISS index ({str(exc).splitlines()[0]})") from exc
    ids_path = directory / IDS_FILE
    try:
        ids = np.load(ids_path, allow_pickle=False)
    except Exception as exc:
        raise ArtifactError(f"{ids_path}: cannot read track ids ({exc})") from exc
    if index.d != manifest["dim"] or index.ntotal != manifest["ntotal"]:
        raise ArtifactError(
            f"{index_path}: index has dim {index.d} and {index.ntotal} vectors, manifest says "
            f"{manifest['dim']} and {manifest['ntotal']}; rebuild the index"
        )
    if len(ids) != index.ntotal:
        raise ArtifactError(f"{ids_path}: {len(ids)} ids for {index.ntotal} vectors; rebuild the index")

    params = dict(manifest.get("params") or {})
    if manifest["index_type"] == "hnsw":
        params["ef_search"] = ef_search or params.get("ef_search", 64)
        index.hnsw.efSearch = params["ef_search"]
    elif manifest["index_type"] == "ivf":
        params["nprobe"] = nprobe or params.get("nprobe", 16)
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    tracks = None
    if TRACKS_FILE in manifest["files"]:
        tracks = _read_tracks(directory / TRACKS_FILE)
    return GalleryIndex(
        index, ids, manifest["model_version"], manifest["index_type"], params, tracks, manifest
    )


def check_model_version(manifest: dict, model_version: str | None, where: str | Path = MANIFEST_FILE) -> None:
    """Raise ArtifactError when an index was built from other weights than the model that will query it."""
    if model_version is not None and manifest.get("model_version") != model_version:
        raise ArtifactError(
            f"{where}: index built for model_version {manifest.get('model_version')!r} but the model is "
            f"{model_version!r}; rebuild the index with this model (or load the matching model)"
        )


def _write_tracks(tracks, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tracks if isinstance(tracks, pa.Table) else pa.Table.from_pandas(tracks, preserve_index=False)
    missing = [c for c in TRACK_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"tracks table lacks columns {missing}; needs {list(TRACK_COLUMNS)}")
    pq.write_table(table.select(list(TRACK_COLUMNS)), path)


def _read_tracks(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=list(TRACK_COLUMNS))
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot read track metadata ({exc})") from exc


# ---------------------------------------------------------------- evaluation and fixtures


def exact_search(gallery_vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k over normalised vectors: (scores, rows), the ground truth."""
    x = normalize(gallery_vectors)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(normalize(_as_matrix(queries, x.shape[1], "queries")), k)


def recall_vs_exact(
    gallery: GalleryIndex, queries: np.ndarray, k: int, gallery_vectors: np.ndarray | None = None
) -> float:
    """Mean fraction of the exact top-k ids that `gallery.search` returns (Recall@k of the index vs brute force).

    `gallery_vectors` (N, d) in index row order; read back from the index when not given.
    """
    vectors = gallery.vectors() if gallery_vectors is None else gallery_vectors
    _, exact_rows = exact_search(vectors, queries, k)
    _, found = gallery.search(queries, k)
    exact_ids = gallery.ids[exact_rows]
    hits = [len(set(e.tolist()) & set(f.tolist())) for e, f in zip(exact_ids, found, strict=True)]
    return float(np.sum(hits) / exact_ids.size)


def synthetic_gallery(
    n: int, dim: int = 128, seed: int = 0, n_clusters: int | None = None, spread: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded clustered unit vectors for index and serving BENCHMARKS only (never quality claims).

    Returns (ids (n,) "syn-000000042" strings, vectors (n, dim) float32 normalised). Points are a random
    cluster centre plus Gaussian noise of `spread` per unit of centre norm, like songs grouped by style.
    """
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(8, int(np.sqrt(n)))
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    chunk = 100_000  # bounded temporaries at 1M+ vectors
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        assign = rng.integers(0, n_clusters, e - s)
        noise = rng.standard_normal((e - s, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        block = centres[assign] + noise
        out[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
    ids = np.char.add("syn-", np.char.zfill(np.arange(n).astype(str), 9))
    return ids, out


def _as_matrix(x: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise ValueError(f"{what} have shape {x.shape}; expected (N, {dim if dim is not None else 'd'})")
    return np.ascontiguousarray(x)


def config_dict(config: IndexConfig) -> dict:
    return asdict(config)
