"""Lyrics <-> audio retrieval through a chant recogniser, as assets (issue 6):

    chant_corpus -> chant_recogniser -> lyrics_retrieval_report <- heldout_rerender

The songbook's vocal is espeak-ng chanting each word at its note onset. A small CTC character recogniser
(lyric2vec_models.asr) learns to hear that voice from generated (text, chanted audio) pairs whose texts come
only from works in the TRAIN split of every protocol seed; its transcript of a clip is matched to lyrics with
character n-gram TF-IDF (lyric2vec_models.lyrics_match). The report runs the fixed protocol (3 split seeds,
both directions, random baseline) on the songbook and on a held-out re-rendering (other soundfont, programs
and voice) that training never heard.

Paths (relative to LyricHome):
    recogniser/chant/           train_mels.npy, train_labels.json, heldout_mels.npy, heldout_labels.json, manifest.json
    recogniser/model/           weights.safetensors + manifest.json (version, CER history)
    recogniser/heldout_render/  mels.npy + tracks.parquet (track_id, program) + manifest.json
    lyrics_retrieval_report.json

Each asset reuses its output when its inputs' fingerprint is unchanged, so `make eval` twice costs seconds.
"""

import hashlib
import json
import os
import time
from dataclasses import asdict

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from lyric2vec_models.artifacts import atomic_dir, read_json, write_json_atomic
from lyric2vec_models.asr import load_recogniser, save_recogniser, train_recogniser, transcribe
from lyric2vec_models.lyrics_match import (
    METHODS,
    corpus_report,
    format_lyrics_report,
    heard_text,
    recogniser_leakage,
    recogniser_text_mask,
)
from lyric2vec_pipeline.assets.learning import (
    CATALOGUE,
    GOAL_RECALL10,
    compute_splits,
    program_order,
    read_catalogue,
)
from lyric2vec_pipeline.metadata import md_table
from lyric2vec_pipeline.resources import LyricHome
from lyric2vec_pipeline.songbook.corpus import SOURCE

PROTOCOL_SEEDS = [0, 1, 2]
GROUP = "lyrics_recogniser"


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def songbook_catalogue(home: LyricHome) -> pl.DataFrame:
    """The songbook's tracks with lyrics and metadata (read_catalogue): the corpus the protocol runs on."""
    return read_catalogue(home).filter(pl.col("partition").str.starts_with("songbook-"))


def protocol_splits(cat: pl.DataFrame, seeds: list[int]) -> dict[int, np.ndarray]:
    """The project's split (distinct + near-duplicate text and work groups, 70/15/15) for each seed."""
    return {s: compute_splits(cat, s, False, 0.15, 0.15)["split"].to_numpy() for s in seeds}


def reusable(manifest_path, fp: str) -> dict | None:
    try:
        manifest = read_json(manifest_path)
    except Exception:
        return None
    return manifest if manifest.get("fingerprint") == fp else None


def read_words(home: LyricHome) -> dict[str, list]:
    """track_id -> word list with verse and onset (the lyrics asset), for every partition."""
    out = {}
    for p in sorted(home.path("lyrics").glob("*.parquet")):
        df = pl.read_parquet(p, columns=["track_id", "words"])
        out.update(zip(df["track_id"].to_list(), df["words"].to_list(), strict=True))
    return out


# ---------------------------------------------------------------- chant_corpus


class ChantCorpusConfig(dg.Config):
    train_clips: int = Field(640, description="Generated training clips (8 min of training reached R@10 1.0 with 640).")
    heldout_clips: int = Field(128, description="Generated clips of other seeds, for the recogniser's CER.")
    seconds: float = Field(10.0, description="Length of each generated clip.")
    workers: int = Field(0, description="Render processes; 0 = one per CPU core.")
    split_seeds: list[int] = Field(PROTOCOL_SEEDS, description="Protocol split seeds whose test/val texts are kept out.")


@dg.asset(deps=CATALOGUE, group_name=GROUP, kinds={"numpy"})
def chant_corpus(context: dg.AssetExecutionContext, config: ChantCorpusConfig, home: LyricHome) -> dg.MaterializeResult:
    """Generated (text, chanted audio) log-mels from texts in the train split of every protocol seed only."""
    from lyric2vec_pipeline.songbook.chant import ChantConfig, TextSource, generate

    t0 = time.perf_counter()
    cat = songbook_catalogue(home)
    lyrics = cat["lyrics"].to_list()
    splits = protocol_splits(cat, config.split_seeds)
    mask = recogniser_text_mask(splits, lyrics)
    leakage = recogniser_leakage(splits, lyrics, mask)
    if any(leakage[f"seed{s}"]["shared_texts"] or leakage[f"seed{s}"]["near_duplicate_pairs"] for s in splits):
        raise RuntimeError(f"recogniser texts overlap a val/test split: {leakage}")  # guards a regression
    if not mask.any():
        raise RuntimeError("no songbook work is in the train split of every protocol seed; nothing to chant")
    sub = cat.filter(pl.Series(mask))
    source = TextSource.from_lyrics(sub["lyrics"].to_list(), sub["language"].fill_null("German").to_list())
    chant_cfg = ChantConfig(seconds=config.seconds)
    fp = fingerprint({"texts": sorted(sub["lyrics"].to_list()), "chant": asdict(chant_cfg),
                      "train": config.train_clips, "heldout": config.heldout_clips})  # fmt: skip
    target = home.path("recogniser", "chant")
    manifest = reusable(target / "manifest.json", fp)
    reused = manifest is not None
    if not reused:
        workers = config.workers or os.cpu_count() or 1
        with atomic_dir(target) as tmp:
            for name, start, n in (("train", 0, config.train_clips), ("heldout", 1_000_000, config.heldout_clips)):
                mels, labels = [], []
                for m, lab in generate(range(start, start + n), source, chant_cfg, batch=32, workers=workers, as_mel=True):
                    mels += m
                    labels += lab
                    context.log.info(f"{name}: {len(labels)}/{n} clips, {time.perf_counter() - t0:.0f} s")
                np.save(tmp / f"{name}_mels.npy", np.stack(mels))
                (tmp / f"{name}_labels.json").write_text(json.dumps(labels, ensure_ascii=False))
            manifest = {"fingerprint": fp, "train_clips": config.train_clips, "heldout_clips": config.heldout_clips,
                        "seconds": config.seconds, "render_seconds": round(time.perf_counter() - t0, 1),
                        "leakage": leakage, "languages": sorted(source.texts)}  # fmt: skip
            write_json_atomic(tmp / "manifest.json", manifest)
    labels = json.loads((target / "train_labels.json").read_text())
    return dg.MaterializeResult(
        metadata={
            "train_clips": manifest["train_clips"],
            "heldout_clips": manifest["heldout_clips"],
            "reused": reused,
            "render_seconds": manifest["render_seconds"],
            "recogniser_text_tracks": leakage["recogniser_tracks"],
            "recogniser_distinct_texts": leakage["recogniser_distinct_texts"],
            "leakage": dg.MetadataValue.json(leakage),
            "examples": dg.MetadataValue.md("\n".join(f"- {t[:100]}" for t in labels[:5])),
            "path": dg.MetadataValue.path(str(target)),
        }
    )


# ---------------------------------------------------------------- chant_recogniser


class ChantRecogniserConfig(dg.Config):
    max_minutes: float = Field(8.0, description="Training wall-clock budget (CPU, one thread).")
    max_steps: int = Field(100_000, description="Step budget; training stops at whichever budget comes first.")
    batch: int = Field(16, description="Clips per step.")
    lr: float = Field(2e-3, description="Peak learning rate (warm-up, then cosine decay over the budget).")
    seed: int = Field(0, description="Initialisation and batch-order seed.")


@dg.asset(deps=[chant_corpus], group_name=GROUP, kinds={"pytorch", "safetensors"})
def chant_recogniser(
    context: dg.AssetExecutionContext, config: ChantRecogniserConfig, home: LyricHome
) -> dg.MaterializeResult:
    """A CTC character recogniser of the chanted voice, trained on chant_corpus; CER on held-out generated clips."""
    import torch

    torch.set_num_threads(1)  # one thread ran faster than two on the shared 2-core box
    corpus = home.path("recogniser", "chant")
    fp = fingerprint({"corpus": read_json(corpus / "manifest.json")["fingerprint"], "config": config.model_dump()})
    target = home.path("recogniser", "model")
    manifest = reusable(target / "manifest.json", fp)
    reused = manifest is not None
    if not reused:
        mels = np.load(corpus / "train_mels.npy", mmap_mode="r")
        labels = json.loads((corpus / "train_labels.json").read_text())
        hmels = np.load(corpus / "heldout_mels.npy").astype(np.float32)
        hlabels = json.loads((corpus / "heldout_labels.json").read_text())
        model, info = train_recogniser(mels, labels, hmels, hlabels, max_steps=config.max_steps,
                                       max_seconds=config.max_minutes * 60, batch=config.batch, lr=config.lr,
                                       seed=config.seed, log=context.log)  # fmt: skip
        save_recogniser(model, target, {"fingerprint": fp, **info})
        manifest = read_json(target / "manifest.json")
    hist = pl.DataFrame(manifest["history"]).select("step", "seconds", "loss", "heldout_cer")
    return dg.MaterializeResult(
        metadata={
            "version": manifest["version"],
            "reused": reused,
            "heldout_cer": float(manifest["heldout_cer"]),
            "steps": manifest["steps"],
            "train_seconds": manifest["seconds"],
            "train_clips": manifest["train_clips"],
            "history": md_table(hist, max_rows=40),
            "path": dg.MetadataValue.path(str(target)),
        }
    )


# ---------------------------------------------------------------- heldout_rerender


class HeldoutRerenderConfig(dg.Config):
    soundfont: str = Field("/usr/share/sounds/sf2/FluidR3_GM.sf2", description="A General MIDI soundfont unlike TimGM6mb.")
    workers: int = Field(0, description="Render processes; 0 = one per CPU core.")
    split_seeds: list[int] = Field(PROTOCOL_SEEDS, description="Works in the test split of any of these seeds are rendered.")


@dg.asset(deps=CATALOGUE, group_name=GROUP, kinds={"numpy"})
def heldout_rerender(
    context: dg.AssetExecutionContext, config: HeldoutRerenderConfig, home: LyricHome
) -> dg.MaterializeResult:
    """Every songbook work in a protocol test split, re-rendered with FluidR3, choir/flute/clarinet and espeak '+m3'."""
    from lyric2vec_pipeline.songbook.chant import RerenderConfig, rerender

    t0 = time.perf_counter()
    cat = songbook_catalogue(home)
    splits = protocol_splits(cat, config.split_seeds)
    test_any = np.zeros(len(cat), bool)
    for s in splits.values():
        test_any |= s == "test"
    prefix = f"{SOURCE}: "
    works = [(t, src[len(prefix):]) for t, src, m in zip(cat["track_id"], cat["source"], test_any, strict=True)
             if m and src and src.startswith(prefix)]  # fmt: skip
    rcfg = RerenderConfig(soundfont=config.soundfont)
    fp = fingerprint({"works": works, "render": asdict(rcfg)})
    target = home.path("recogniser", "heldout_render")
    manifest = reusable(target / "manifest.json", fp)
    reused = manifest is not None
    if not reused:
        ids, programs, mels = [], [], []
        for tid, program, mel in rerender(works, rcfg, workers=config.workers or os.cpu_count() or 1):
            ids.append(tid)
            programs.append(program)
            mels.append(mel)
            if len(ids) % 25 == 0:
                context.log.info(f"re-rendered {len(ids)}/{len(works)} works, {time.perf_counter() - t0:.0f} s")
        with atomic_dir(target) as tmp:
            np.save(tmp / "mels.npy", np.stack(mels))
            pl.DataFrame({"track_id": ids, "program": programs}).write_parquet(tmp / "tracks.parquet")
            manifest = {"fingerprint": fp, "works": len(ids), **asdict(rcfg),
                        "render_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            write_json_atomic(tmp / "manifest.json", manifest)
    tracks = pl.read_parquet(target / "tracks.parquet")
    return dg.MaterializeResult(
        metadata={
            "works": manifest["works"],
            "reused": reused,
            "render_seconds": manifest["render_seconds"],
            "soundfont": manifest["soundfont"],
            "voice": f"espeak-ng {manifest['voice_suffix']} at {manifest['voice_rate']} wpm",
            "programs": md_table(tracks.group_by("program").len().sort("program")),
            "path": dg.MetadataValue.path(str(target)),
        }
    )


# ---------------------------------------------------------------- lyrics_retrieval_report


class LyricsReportConfig(dg.Config):
    tie_seed: int = Field(0, description="Seed of the random order among tied scores.")
    split_seeds: list[int] = Field(PROTOCOL_SEEDS, description="The protocol's split seeds.")


def songbook_gallery_mels(home: LyricHome, track_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """Each track's gallery clip as in lyric2vec_models.evaluation: the first program (piano), window 0."""
    from lyric2vec_pipeline.assets.learning import read_clips

    clips = read_clips(home, set(track_ids)).filter(pl.col("window") == 0)
    order = {p: i for i, p in enumerate(program_order(sorted(set(clips["program"].drop_nulls()))))}
    clips = clips.with_columns(pl.col("program").replace_strict(order, default=len(order)).alias("rank"))
    first = clips.sort("rank").group_by("track_id", maintain_order=True).first().sort("track_id")
    mels, cache = [], {}
    for part, row in zip(first["partition"], first["row"], strict=True):
        if part not in cache:
            cache[part] = np.load(home.path("spectrograms", part, "mels.npy"), mmap_mode="r")
        mels.append(np.asarray(cache[part][row], dtype=np.float32))
    return first["track_id"].to_list(), np.stack(mels)


@dg.asset(deps=[chant_recogniser, heldout_rerender], group_name=GROUP, kinds={"json"})
def lyrics_retrieval_report(config: LyricsReportConfig, home: LyricHome) -> dg.MaterializeResult:
    """The issue-6 protocol through the recogniser: songbook and held-out re-rendering, 3 split seeds."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, rec_manifest = load_recogniser(home.path("recogniser", "model"))
    cat = songbook_catalogue(home)
    tids = cat["track_id"].to_list()
    lyrics = dict(zip(tids, cat["lyrics"].to_list(), strict=True))
    splits = protocol_splits(cat, config.split_seeds)
    mask = recogniser_text_mask(splits, cat["lyrics"].to_list())
    words = read_words(home)
    heard = {t: heard_text(words.get(t), 30.0) for t in tids}
    test_any = sorted({t for s in splits.values() for t, x in zip(tids, s, strict=True) if x == "test" and lyrics[t]})
    gallery_ids, gallery_mels = songbook_gallery_mels(home, test_any)
    held = home.path("recogniser", "heldout_render")
    held_ids = pl.read_parquet(held / "tracks.parquet")["track_id"].to_list()
    corpora = {"songbook": (gallery_ids, gallery_mels),
               "heldout_rerender": (held_ids, np.load(held / "mels.npy").astype(np.float32))}  # fmt: skip
    report = {"recogniser_version": rec_manifest["version"], "recogniser_heldout_cer": rec_manifest["heldout_cer"],
              "split_seeds": config.split_seeds, "tie_seed": config.tie_seed,
              "leakage": recogniser_leakage(splits, cat["lyrics"].to_list(), mask), "corpora": {}, "transcripts": {}}  # fmt: skip
    leaks = [report["leakage"][f"seed{s}"] for s in config.split_seeds]
    report["leakage_summary"] = (f"{sum(x['shared_texts'] for x in leaks)} shared texts, "
                                 f"{sum(x['near_duplicate_pairs'] for x in leaks)} near-duplicate pairs")  # fmt: skip
    for name, (ids, mels) in corpora.items():
        transcripts = dict(zip(ids, transcribe(model, mels), strict=True))
        report["corpora"][name] = corpus_report(tids, lyrics, transcripts, heard, splits, config.tie_seed)
        report["transcripts"][name] = transcripts
    main = report["corpora"]["songbook"]["methods"][METHODS[0]]["summary"]
    report["goal_met"] = bool(min(main[d]["recall@10"]["mean"] for d in main) >= GOAL_RECALL10)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    target = home.path("lyrics_retrieval_report.json")
    write_json_atomic(target, report)
    meta = {}
    for name, corpus in report["corpora"].items():
        s = corpus["methods"][METHODS[0]]["summary"]
        for d in s:
            meta[f"{name}/{d}/recall@10"] = round(s[d]["recall@10"]["mean"], 4)
        meta[f"{name}/random_recall@10"] = round(s["lyrics->audio"]["random_recall@10"], 4)
        meta[f"{name}/transcript_cer"] = round(corpus["cer_vs_sung_words"] or float("nan"), 4)
    return dg.MaterializeResult(
        metadata={**meta, "recogniser": rec_manifest["version"], "goal_met": report["goal_met"],
                  "seconds": report["seconds"], "path": dg.MetadataValue.path(str(target)),
                  "report": dg.MetadataValue.md(format_lyrics_report(report))}  # fmt: skip
    )


def load_lyrics_report(home: LyricHome) -> dict:
    return read_json(home.path("lyrics_retrieval_report.json"))


recogniser_assets = [chant_corpus, chant_recogniser, heldout_rerender, lyrics_retrieval_report]
__all__ = [
    "recogniser_assets",
    "load_lyrics_report",
    "format_lyrics_report",
    "protocol_splits",
    "read_words",
    "songbook_catalogue",
]
