"""Retrieval evaluation on a held-out split: the protocol of issue 6, as plain functions.

Gallery = the test split, one audio clip per work (its first program, e.g. piano). Directions:
    lyrics->audio        a song's lyrics embedding finds its gallery clip
    audio->lyrics        a gallery clip finds the song's lyrics among the test lyrics
    description->audio   the metadata description ("a German chorale by J.S. Bach in G minor ...")
                         finds the song's gallery clip (identical descriptions tie: broken at random)
    audio->audio         a clip of another program (e.g. organ) finds the same song's gallery clip
Ablations: the same queries against a gallery of songs represented by ONE view (text-only = the
lyrics embedding, audio-only = the gallery clip, metadata-only = artist + genre) or by the gated
fusion of all three. A gallery vector that contains the query's own input (lyrics -> text-only,
lyrics -> fused) is flagged `contains_query` and is never reported as audio retrieval.
Every figure comes with the gallery size and the exact random baseline; ties are broken at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lyric2vec_models.data import TrainingData
from lyric2vec_models.metrics import retrieval_metrics

DIRECTIONS = ("lyrics->audio", "audio->lyrics", "description->audio", "audio->audio")
QUERIES = ("lyrics", "description", "audio")  # ablation rows
GALLERY_VIEWS = ("text", "audio", "meta", "fused")  # ablation columns
GALLERY_VIEW_NAMES = {"text": "text-only", "audio": "audio-only", "meta": "metadata-only", "fused": "fused"}
DEFINITIONS = {
    "lyrics->audio": "query: the song's lyrics embedding; gallery: one audio clip (first program) per test song",
    "audio->lyrics": "query: a song's gallery clip; gallery: the lyrics embeddings of the test songs with lyrics",
    "description->audio": "query: the metadata description text (language, genre, composer, key, meter, parts); "
    "gallery: one audio clip per test song",
    "audio->audio": "query: a clip of the same song in another program; gallery: one audio clip per test song",
    "text-only": "gallery songs represented by their lyrics embedding alone (songs without lyrics left out)",
    "audio-only": "gallery songs represented by their gallery clip's audio embedding alone",
    "metadata-only": "gallery songs represented by their artist + genre embedding alone "
    "(artists unseen in training use the unknown bucket)",
    "fused": "gallery songs represented by the gated fusion of lyrics, audio and metadata embeddings",
    "contains_query": "the gallery vector is built from the query's own input (not cross-modal retrieval)",
}
METRIC_KEYS = ("recall@1", "recall@5", "recall@10", "mrr", "median_rank")


def program_rank(program: str | None, program_order: Sequence[str]) -> tuple[int, str]:
    """Sort key of a clip's program: its place in `program_order`, then its name."""
    name = program or ""
    return (program_order.index(name) if name in program_order else len(program_order), name)


def gallery_and_query_clips(
    clip_track: np.ndarray,
    programs: Sequence[str | None],
    windows: Sequence[int],
    n_tracks: int,
    program_order: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Per track: the gallery clip (first program, first window) and a query clip of ANOTHER program.

    (M,) clip -> track, programs, windows -> gallery (N,) clip row, query (N,) clip row or -1 when
    the track has no clip of a second program (it is then not an audio->audio query).
    """
    gallery = np.full(n_tracks, -1, dtype=np.int64)
    query = np.full(n_tracks, -1, dtype=np.int64)
    by_track: dict[int, list[int]] = {}
    for clip, t in enumerate(np.asarray(clip_track)):
        by_track.setdefault(int(t), []).append(clip)
    for t, clips in by_track.items():
        clips.sort(key=lambda c: (program_rank(programs[c], program_order), int(windows[c])))
        gallery[t] = clips[0]
        other = [c for c in clips if programs[c] != programs[clips[0]]]
        if other:
            query[t] = other[0]
    if (gallery < 0).any():
        raise ValueError(f"{int((gallery < 0).sum())} tracks have no audio clip")
    return gallery, query


@torch.no_grad()
def embed_split(
    model, config, data: TrainingData, gallery_clip: np.ndarray, query_clip: np.ndarray
) -> dict[str, np.ndarray]:
    """Normalised per-track vectors of a split with a trained `Lyric2Vec` (eval mode, fixed windows).

    Returns lyrics, description, meta, audio (gallery clip), audio_query (other program; zero rows
    where there is none) and fused (gated fusion of lyrics, gallery audio, meta), each (N, d).
    """
    from lyric2vec_models.train import encode_clips

    model.eval()
    device = next(model.parameters()).device
    rows = np.concatenate([gallery_clip, query_clip[query_clip >= 0]])
    z_clips = encode_clips(
        model,
        np.asarray(data.mels[np.sort(np.unique(rows))]),
        data.spec.frames_for(config.window_seconds),
        float(np.log(data.spec.log_floor)),
    )
    at = {int(c): i for i, c in enumerate(np.sort(np.unique(rows)))}
    audio = z_clips[[at[int(c)] for c in gallery_clip]]
    audio_query = np.zeros_like(audio)
    has_q = query_clip >= 0
    audio_query[has_q] = z_clips[[at[int(c)] for c in query_clip[has_q]]]
    t = lambda a: torch.as_tensor(np.asarray(a)).to(device)  # noqa: E731
    lyrics = model.encode_text(t(data.text_feats.astype(np.float32)))
    desc = model.encode_text(t(data.desc_feats.astype(np.float32)))
    meta = model.encode_meta(t(data.artist_ids), t(data.genre_ids))
    mask_text = t(data.text_mask.astype(bool))
    ones = torch.ones_like(mask_text)
    fused, gates = model.fuse(lyrics, t(audio), meta, mask_text, ones, ones)
    out = {"lyrics": lyrics, "description": desc, "meta": meta, "fused": fused, "gates": gates}
    out = {k: v.float().cpu().numpy() for k, v in out.items()}
    return out | {"audio": audio, "audio_query": audio_query}


def _metrics(query: np.ndarray, gallery: np.ndarray, relevant: np.ndarray, seed: int) -> dict:
    if len(query) == 0 or len(gallery) < 2:
        return {"n_queries": int(len(query)), "gallery_size": int(len(gallery)), "skipped": "too few items"}
    return retrieval_metrics(query, gallery, relevant, seed=seed)


def evaluate_vectors(
    z: dict[str, np.ndarray], text_mask: np.ndarray, has_query_clip: np.ndarray, seed: int = 0
) -> dict:
    """The four directions and the ablation matrix from per-track vectors (see `embed_split`).

    Relevant item = the query's own song only: two songs with an identical text or description
    give identical queries, and the tie is not counted in the model's favour.
    """
    n = len(text_mask)
    lyr = np.flatnonzero(np.asarray(text_mask, bool))  # tracks with a text view
    aq = np.flatnonzero(np.asarray(has_query_clip, bool))  # tracks with a clip of another program
    pos = np.full(n, -1, dtype=np.int64)
    pos[lyr] = np.arange(len(lyr))  # track -> row in a lyrics-only gallery
    everyone = np.arange(n)

    directions = {
        "lyrics->audio": _metrics(z["lyrics"][lyr], z["audio"], lyr, seed),
        "audio->lyrics": _metrics(z["audio"][lyr], z["lyrics"][lyr], np.arange(len(lyr)), seed),
        "description->audio": _metrics(z["description"], z["audio"], everyone, seed),
        "audio->audio": _metrics(z["audio_query"][aq], z["audio"], aq, seed),
    }
    query_rows = {"lyrics": (z["lyrics"], lyr), "description": (z["description"], everyone),
                  "audio": (z["audio_query"], aq)}  # fmt: skip
    galleries = {"text": (z["lyrics"], lyr), "audio": (z["audio"], everyone), "meta": (z["meta"], everyone),
                 "fused": (z["fused"], everyone)}  # fmt: skip
    ablations: dict[str, dict] = {}
    for qname, (qvec, qrows) in query_rows.items():
        for gname, (gvec, grows) in galleries.items():
            rows = qrows[np.isin(qrows, grows)]  # queries whose song is in this gallery
            relevant = pos[rows] if gname == "text" else rows
            m = _metrics(qvec[rows], gvec[grows], relevant, seed)
            m["contains_query"] = qname == "lyrics" and gname in ("text", "fused")
            ablations[f"{qname}->{GALLERY_VIEW_NAMES[gname]}"] = m
    return {"directions": directions, "ablations": ablations}


def summarise_seeds(reports: list[dict]) -> dict:
    """Mean and sample std of each metric of each direction and ablation over split seeds."""
    out: dict[str, dict] = {}
    for section in ("directions", "ablations"):
        for name in reports[0][section]:
            runs = [
                r[section][name] for r in reports if "skipped" not in r[section].get(name, {"skipped": 1})
            ]
            if not runs:
                continue
            stats = {}
            for k in (*METRIC_KEYS, "gallery_size"):
                v = np.array([r[k] for r in runs], dtype=np.float64)
                stats[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
            stats["random_recall@10"] = {"mean": float(np.mean([r["random"]["recall@10"] for r in runs]))}
            out[f"{section}/{name}"] = stats
    return {"n_seeds": len(reports), "seeds": [r.get("split_seed") for r in reports], "metrics": out}


def _row(name: str, m: dict) -> str:
    if "skipped" in m:
        return f"| {name} | {m.get('n_queries', 0)} | {m.get('gallery_size', 0)} | - | - | - | - | - | - |"
    return (f"| {name} | {m['n_queries']} | {m['gallery_size']} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | "
            f"{m['recall@10']:.3f} | {m['mrr']:.3f} | {m['median_rank']:.0f} | {m['random']['recall@10']:.3f} |")  # fmt: skip


HEADER = ("| direction | queries | gallery | R@1 | R@5 | R@10 | MRR | median rank | random R@10 |\n"
          "|---|---|---|---|---|---|---|---|---|")  # fmt: skip


def _ordered(ablations: dict) -> list[tuple[str, dict]]:
    """Ablation rows in QUERIES x GALLERY_VIEWS order (JSON round trips sort the keys)."""
    names = [f"{q}->{GALLERY_VIEW_NAMES[g]}" for q in QUERIES for g in GALLERY_VIEWS]
    return [(n, ablations[n]) for n in names if n in ablations]


def format_report(report: dict) -> str:
    """The report as markdown: directions, ablations (flagged rows marked), and the seed summary if any."""
    lines = [
        f"**model** {report.get('model_version', '?')} · **test songs** {report.get('test_tracks', '?')} · "
        f"**split seed** {report.get('split_seed', '?')} · gallery clip program **{report.get('gallery_program', '?')}**",
        "",
        HEADER,
        *[_row(k, report["directions"][k]) for k in DIRECTIONS if k in report["directions"]],
        "",
        "Ablations (query -> gallery view; * = gallery vector contains the query's own input, not cross-modal):",
        "",
        HEADER.replace("direction", "query -> gallery"),
        *[_row(k + (" *" if v.get("contains_query") else ""), v) for k, v in _ordered(report["ablations"])],
    ]
    seeds = report.get("seed_summary")
    if seeds:
        lines += ["", f"Mean ± std over split seeds {seeds['seeds']}:", "",
                  "| direction | R@10 | MRR | median rank | gallery | random R@10 |", "|---|---|---|---|---|---|"]  # fmt: skip
        for d in DIRECTIONS:
            name, s = f"directions/{d}", seeds["metrics"].get(f"directions/{d}")
            if s is None:
                continue
            lines.append(
                f"| {name.split('/', 1)[1]} | {s['recall@10']['mean']:.3f} ± {s['recall@10']['std']:.3f} | "
                f"{s['mrr']['mean']:.3f} ± {s['mrr']['std']:.3f} | {s['median_rank']['mean']:.1f} | "
                f"{s['gallery_size']['mean']:.0f} | {s['random_recall@10']['mean']:.3f} |"
            )
    if report.get("goal"):
        lines += ["", report["goal"]]
    return "\n".join(lines)
