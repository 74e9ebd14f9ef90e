"""Gallery indexes: approximate vs exact recall, save/load round trip, corrupt files named in the error."""

import json

import numpy as np
import pytest

from lyric2vec_models.artifacts import ArtifactError
from lyric2vec_models.index import (
    IndexConfig,
    build_gallery,
    check_model_version,
    choose_index_type,
    exact_search,
    load_gallery,
    recall_vs_exact,
    save_gallery,
    synthetic_gallery,
)

DIM = 64


@pytest.fixture(scope="module")
def seeded():
    """20k clustered unit vectors and 200 held-out queries from the same distribution."""
    ids, x = synthetic_gallery(20_200, DIM, seed=0, spread=1.0)
    return ids[:20_000], x[:20_000], x[20_000:]


def test_synthetic_gallery_is_seeded_and_normalised():
    ids, x = synthetic_gallery(1000, 32, seed=3)
    ids2, x2 = synthetic_gallery(1000, 32, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(ids, ids2)
    assert x.dtype == np.float32 and x.shape == (1000, 32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert len(set(ids.tolist())) == 1000


def test_index_type_follows_size():
    cfg = IndexConfig(exact_below=1000, approximate="ivf")
    assert choose_index_type(999, cfg) == "flat"
    assert choose_index_type(1000, cfg) == "ivf"
    ids, x = synthetic_gallery(500, 16, seed=1)
    assert build_gallery(ids, x, "v", cfg).index_type == "flat"
    assert build_gallery(ids, x, "v", IndexConfig(exact_below=100)).index_type == "hnsw"


def test_flat_matches_brute_force_exactly(seeded):
    ids, x, q = seeded
    g = build_gallery(ids, x, "v", index_type="flat")
    scores, found = g.search(q, 10)
    exact_scores, rows = exact_search(x, q, 10)
    assert np.array_equal(found, ids[rows])
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # descending
    assert scores.max() <= 1 + 1e-5 and scores.min() >= -1 - 1e-5


@pytest.mark.parametrize(
    "kind, cfg, floor",
    [
        ("hnsw", IndexConfig(), 0.99),  # observed 0.9995 (M=32, efC=64, efSearch=64)
        ("hnsw", IndexConfig(hnsw_m=16, hnsw_ef_construction=40, hnsw_ef_search=16), 0.93),  # observed 0.9625
        ("ivf", IndexConfig(), 0.99),  # observed 1.000 (nlist=512, nprobe=16)
        ("ivf", IndexConfig(ivf_nprobe=4), 0.95),  # observed 0.977
    ],
)
def test_approximate_recall_at_10_vs_exact(seeded, kind, cfg, floor):
    ids, x, q = seeded
    g = build_gallery(ids, x, "v", cfg, index_type=kind)
    assert g.index_type == kind
    recall = recall_vs_exact(g, q, 10, x)
    assert recall >= floor, f"{kind} {g.params}: Recall@10 vs exact {recall:.4f} < {floor}"
    # reading the vectors back from the index gives the same ground truth
    assert recall_vs_exact(g, q, 10) == pytest.approx(recall)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip_identical_results(seeded, tmp_path, kind):
    ids, x, q = seeded
    ids, x = ids[:5000], x[:5000]
    import pyarrow as pa

    tracks = pa.table({"track_id": ids, "title": [f"t{i}" for i in range(5000)],
                       "artist": ["a"] * 5000, "genre": ["g"] * 5000})  # fmt: skip
    g = build_gallery(ids, x, "l2v-test-1", index_type=kind, tracks=tracks)
    manifest = save_gallery(g, tmp_path / "audio", gallery="audio")
    assert manifest["ntotal"] == 5000 and manifest["dim"] == DIM and manifest["metric"] == "inner_product"
    assert set(manifest["files"]) == {"index.faiss", "ids.npy", "tracks.parquet"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind

    g2 = load_gallery(tmp_path / "audio", model_version="l2v-test-1")
    assert (g2.index_type, g2.ntotal, g2.dim, g2.params) == (kind, 5000, DIM, g.params)
    s1, i1 = g.search(q, 25)
    s2, i2 = g2.search(q, 25)
    assert np.array_equal(i1, i2) and np.array_equal(s1, s2)
    assert g2.tracks.column("title").to_pylist()[:2] == ["t0", "t1"]


def test_k_larger_than_gallery_returns_all(tmp_path):
    ids, x = synthetic_gallery(7, 8, seed=2)
    scores, found = build_gallery(ids, x, "v").search(x[:2], 50)
    assert scores.shape == (2, 7) and sorted(found[0].tolist()) == sorted(ids.tolist())


def test_bad_vectors_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        build_gallery(["a", "b"], np.array([[1.0, 0.0], [np.nan, 1.0]]), "v")
    with pytest.raises(ValueError, match="zero norm"):
        build_gallery(["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]), "v")
    with pytest.raises(ValueError, match="2 ids for 3"):
        build_gallery(["a", "b"], np.eye(3), "v")


@pytest.fixture
def saved(tmp_path):
    ids, x = synthetic_gallery(3000, 32, seed=4)
    save_gallery(build_gallery(ids, x, "l2v-a", IndexConfig(exact_below=1000)), tmp_path / "fused")
    return tmp_path / "fused"


def test_truncated_index_file_is_named(saved):
    path = saved / "index.faiss"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"index\.faiss.*truncated"):
        load_gallery(saved)


def test_corrupt_index_with_forged_manifest_is_named(saved):
    """Even when the manifest is rewritten to match, FAISS cannot read garbage: the error names the file."""
    from lyric2vec_models.artifacts import file_entry

    path = saved / "index.faiss"
    path.write_bytes(b"\x00garbage" * 100)
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["index.faiss"] = file_entry(path)
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"index\.faiss: cannot read FAISS index"):
        load_gallery(saved)


def test_tampered_manifest_is_named(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["files"]["ids.npy"]["sha256"] = "0" * 64
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"ids\.npy: sha256 does not match"):
        load_gallery(saved)

    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"manifest\.json: not valid JSON"):
        load_gallery(saved)


def test_manifest_count_mismatch_is_named(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["ntotal"] = 2999
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"index\.faiss: index has dim 32 and 3000 vectors"):
        load_gallery(saved)


def test_model_version_mismatch_is_detected(saved):
    assert load_gallery(saved, model_version="l2v-a").model_version == "l2v-a"
    with pytest.raises(
        ArtifactError, match=r"manifest\.json: index built for model_version 'l2v-a'.*'l2v-b'"
    ):
        load_gallery(saved, model_version="l2v-b")
    manifest = json.loads((saved / "manifest.json").read_text())
    check_model_version(manifest, "l2v-a")
    with pytest.raises(ArtifactError):
        check_model_version(manifest, "l2v-b")
