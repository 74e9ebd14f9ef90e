"""Train/val/test splits that keep every lyric text, and every work, on one side.

Tracks are joined into groups (union-find) when they share a normalised lyric text, when their texts
are near-duplicates (see `near_duplicate_pairs`), or when they share a work key (and, in "artist"
mode, an artist); whole groups are then dealt to the splits in a seeded order. The same chorale
text set to two harmonisations is one group, and so are the songbook's OCR variants of one Gloria,
so no test lyric was seen in training. Instrumentals (no text) form groups by their work alone.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_text(text: str | None) -> str | None:
    """Lyrics -> the key two texts share when they are 'the same text'; None for no text.

    NFKC, case-folded, punctuation and whitespace collapsed to single spaces:
    "Nun danket alle Gott,\\nmit Herzen" -> "nun danket alle gott mit herzen".
    """
    if text is None:
        return None
    key = _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return key or None


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def near_duplicate_pairs(
    texts: Sequence[str | None],
    n: int = 5,
    jaccard: float = 0.5,
    containment: float = 0.5,
    min_ngrams: int = 50,
    min_ngrams_jaccard: int = 20,
) -> list[tuple[int, int]]:
    """Index pairs (i < j) of texts that are variants of one text, over character n-gram sets.

    Texts are normalised and their spaces dropped (so "bo nae" = "bonae"), then cut into
    character `n`-grams. A pair is a near-duplicate when the sets' Jaccard similarity is at least
    `jaccard`, or when at least `containment` of the smaller set lies in the larger one and the
    smaller has `min_ngrams` or more (a verse quoted inside a longer text; short texts such as
    "kyrie eleison" are left to Jaccard). Texts under `min_ngrams_jaccard` n-grams (a few words)
    are joined only when identical. On the songbook this joins the OCR variants of one Gloria
    and chorale stanzas set twice; the closest pair it leaves apart shares 49% of its n-grams.
    """
    import scipy.sparse as sp

    rows, cols = [], []
    for i, t in enumerate(texts):
        key = normalise_text(t)
        if key is None:
            continue
        s = key.replace(" ", "")
        grams = {zlib.crc32(s[k : k + n].encode()) & 0xFFFFFF for k in range(max(1, len(s) - n + 1))}
        rows += [i] * len(grams)
        cols += sorted(grams)
    if not rows:
        return []
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), 1 << 24))
    size = np.asarray(x.sum(1)).ravel()  # (N,) distinct n-grams per text
    shared = sp.triu(x @ x.T, k=1).tocoo()  # (N, N) n-grams in common, i < j
    i, j, common = shared.row, shared.col, shared.data
    small = np.minimum(size[i], size[j])
    keep = ((common / (size[i] + size[j] - common) >= jaccard) & (small >= min_ngrams_jaccard)) | (
        (common / small >= containment) & (small >= min_ngrams)
    )
    return sorted(zip(i[keep].tolist(), j[keep].tolist(), strict=True))


def split_groups(
    texts: Sequence[str | None],
    works: Sequence[str],
    artists: Sequence[str] | None = None,
    near_duplicates: bool = True,
) -> np.ndarray:
    """(N,) group id per track: tracks sharing a normalised (or near-duplicate) text, a work or an artist."""
    n = len(texts)
    if len(works) != n or (artists is not None and len(artists) != n):
        raise ValueError(f"texts ({n}), works ({len(works)}) and artists must have one entry per track")
    uf = _UnionFind(n)
    if near_duplicates:
        for i, j in near_duplicate_pairs(texts):
            uf.union(i, j)
    keys = [("work", works)] + [("text", [normalise_text(t) for t in texts])]
    if artists is not None:
        keys.append(("artist", artists))
    for _, values in keys:
        first: dict[str, int] = {}
        for i, v in enumerate(values):
            if v is None:
                continue
            if v in first:
                uf.union(first[v], i)
            else:
                first[v] = i
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    _, group = np.unique(roots, return_inverse=True)
    return group.astype(np.int64)


def assign_splits(
    texts: Sequence[str | None],
    works: Sequence[str],
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    artists: Sequence[str] | None = None,
    near_duplicates: bool = True,
) -> np.ndarray:
    """(N,) split name per track ("train" | "val" | "test"); whole groups go to one split.

    Groups are visited in a seeded random order and each goes to the split furthest below its target
    track count (test first, then val, on ties), so the sizes land close to `fractions` even when
    groups differ in size. Pass `artists` to also keep every artist on one side (by-artist mode).
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    group = split_groups(texts, works, artists, near_duplicates)
    n = len(group)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out.astype(str)
    sizes = np.bincount(group)
    order = np.random.default_rng(seed).permutation(len(sizes))
    target = np.asarray(fractions, dtype=np.float64) * n
    filled = np.zeros(3)
    prefer = (2, 1, 0)  # ties: test, then val, then train (small splits must not end up empty)
    for g in order:
        deficit = (target - filled) / np.maximum(target, 1e-9)  # share of each target still missing
        s = max(prefer, key=lambda k: (deficit[k], -prefer.index(k)))
        out[group == g] = SPLITS[s]
        filled[s] += sizes[g]
    return out.astype(str)


def text_overlap(splits: Sequence[str], texts: Sequence[str | None]) -> int:
    """Number of distinct normalised texts found in more than one split (0 for a valid split)."""
    seen: dict[str, set[str]] = {}
    for s, t in zip(splits, texts, strict=True):
        key = normalise_text(t)
        if key is not None:
            seen.setdefault(key, set()).add(str(s))
    return sum(len(v) > 1 for v in seen.values())


def near_duplicate_overlap(splits: Sequence[str], texts: Sequence[str | None]) -> int:
    """Number of near-duplicate text pairs whose tracks sit in different splits."""
    return sum(splits[i] != splits[j] for i, j in near_duplicate_pairs(texts))


def group_overlap(splits: Sequence[str], keys: Sequence[str | None]) -> int:
    """Number of distinct non-null keys (works, artists) found in more than one split."""
    seen: dict[str, set[str]] = {}
    for s, k in zip(splits, keys, strict=True):
        if k is not None:
            seen.setdefault(str(k), set()).add(str(s))
    return sum(len(v) > 1 for v in seen.values())
