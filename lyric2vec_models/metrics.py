"""Retrieval metrics with honest tie-breaking and the exact random baseline.

A relevant item tied in score with irrelevant ones is placed at a random position among them
(seeded). Ranking relevant-first on ties would let identical texts (the same description for many
songs) score as if the model had told them apart; a gallery of identical vectors scores the random
baseline here, not Recall 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_sets(relevant, n_queries: int) -> list[np.ndarray]:
    if isinstance(relevant, np.ndarray) and relevant.ndim == 1 and relevant.dtype.kind in "iu":
        return [np.array([r]) for r in relevant]
    sets = [np.asarray(list(r) if not np.isscalar(r) else [r], dtype=np.int64) for r in relevant]
    if len(sets) != n_queries:
        raise ValueError(f"relevant has {len(sets)} entries for {n_queries} queries")
    if any(len(s) == 0 for s in sets):
        raise ValueError("every query needs at least one relevant gallery item")
    return sets


def ranks(
    query: np.ndarray,
    gallery: np.ndarray,
    relevant: np.ndarray | Sequence[Sequence[int]],
    seed: int = 0,
    decimals: int = 6,
    chunk: int = 512,
) -> np.ndarray:
    """1-based rank of the best-ranked relevant gallery item for each query. (Q, d), (G, d) -> (Q,).

    Scores are dot products (cosine for normalised vectors) rounded to `decimals` so that float
    noise between identical vectors counts as a tie; ties are broken by seeded random keys.
    """
    query, gallery = np.asarray(query, np.float64), np.asarray(gallery, np.float64)
    sets = _as_sets(relevant, len(query))
    rng = np.random.default_rng(seed)
    out = np.empty(len(query), dtype=np.int64)
    for s in range(0, len(query), chunk):
        scores = np.round(query[s : s + chunk] @ gallery.T, decimals)  # (c, G)
        keys = rng.random(scores.shape)  # (c, G) random order within ties
        for i in range(len(scores)):
            rel = sets[s + i]
            sr, kr = scores[i, rel][:, None], keys[i, rel][:, None]  # (R, 1)
            before = (scores[i] > sr) | ((scores[i] == sr) & (keys[i] < kr))  # (R, G)
            out[s + i] = 1 + before.sum(1).min()
    return out


def random_baseline(gallery_size: int, n_relevant: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """Exact expectations under a uniformly random ranking, averaged over queries.

    With R relevant among G, P(best relevant rank > r) = C(G-R, r) / C(G, r)
    = prod_{i<r} (G-R-i)/(G-i). For R = 1 this gives Recall@k = k/G.
    """
    G = gallery_size
    out: dict[str, list[float]] = {f"recall@{k}": [] for k in ks} | {"mrr": [], "median_rank": []}
    for R, count in zip(*np.unique(np.asarray(n_relevant), return_counts=True), strict=True):
        i = np.arange(G)
        survive = np.concatenate(
            [[1.0], np.cumprod(np.clip((G - R - i) / (G - i), 0.0, None))]
        )  # P(rank > r), r=0..G
        p_rank = survive[:-1] - survive[1:]  # P(best rank == r), r = 1..G
        for k in ks:
            out[f"recall@{k}"] += [1.0 - survive[min(k, G)]] * count
        out["mrr"] += [float((p_rank / np.arange(1, G + 1)).sum())] * count
        out["median_rank"] += [float(np.searchsorted(np.cumsum(p_rank), 0.5) + 1)] * count
    return {k: float(np.mean(v)) if k != "median_rank" else float(np.median(v)) for k, v in out.items()}


def retrieval_metrics(
    query: np.ndarray,
    gallery: np.ndarray,
    relevant: np.ndarray | Sequence[Sequence[int]],
    ks=(1, 5, 10),
    seed: int = 0,
) -> dict:
    """Recall@k, MRR and median rank, with the gallery size and the random baseline for the same setup."""
    r = ranks(query, gallery, relevant, seed=seed)
    sets = _as_sets(relevant, len(query))
    out = {f"recall@{k}": float((r <= k).mean()) for k in ks}
    out |= {
        "mrr": float((1.0 / r).mean()),
        "median_rank": float(np.median(r)),
        "n_queries": int(len(r)),
        "gallery_size": int(len(gallery)),
        "random": random_baseline(len(gallery), np.array([len(s) for s in sets]), ks),
    }
    return out
