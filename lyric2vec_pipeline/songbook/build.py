"""Build one partition of the songbook: parse the works, render their clips to FLAC, return rows.

Each work is parsed and rendered in a fresh worker process (`maxtasksperchild=1`): espeak-ng keeps
internal state between utterances, so a work rendered after another would sound slightly different.
A fresh process per work makes every clip depend only on its work, program and config.

Workers are forked from the caller, warmed up first (music21 loaded, one work parsed) so that each fresh
worker starts fast. A forkserver would avoid forking a threaded Dagster process, but measured 5-50x slower
here (each worker re-imported music21), so fork it is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from lyric2vec_models.artifacts import atomic_path

from .corpus import LICENSE, SOURCE, SongbookWork, list_lyric_works, parse_work, partition_of
from .render import DEFAULT_PROGRAMS, RenderConfig, render_clip, render_voice

# A work whose words are this garbled (OCR debris such as "úciaúniú") is quarantined, not learned from.
MAX_GARBLED_WORD_FRACTION = 0.1
_GARBLED = re.compile(r"[úþ0-9]")


@dataclass(frozen=True)
class SongbookConfig:
    render: RenderConfig = RenderConfig()  # audio rendering (rate, length, soundfont, vocals)
    programs: tuple[str, ...] = DEFAULT_PROGRAMS  # GM programs rendered per work: one clip each
    limit: int = 0  # keep only the first N works of a partition (0 = all); for tests and quick runs
    workers: int = 2  # render processes


def works_in_partition(partition: str, limit: int = 0) -> list[str]:
    paths = [p for p in list_lyric_works() if partition_of(p) == partition]
    return paths[:limit] if limit else paths


def garbled_fraction(work: SongbookWork) -> float:
    return sum(bool(_GARBLED.search(w.word)) for w in work.words) / max(len(work.words), 1)


def _build_one(args: tuple[str, SongbookConfig, str]) -> dict:
    rel_path, cfg, audio_dir = args
    try:
        work = parse_work(rel_path)
    except Exception as exc:  # a corpus file music21 cannot parse, or one without words
        return {"rel_path": rel_path, "error": "unparseable_or_no_lyrics", "detail": str(exc)[:500]}
    garbled = garbled_fraction(work)
    if garbled > MAX_GARBLED_WORD_FRACTION:
        return {
            "rel_path": rel_path,
            "track_id": work.work_id,
            "error": "garbled_lyrics",
            "detail": f"{garbled:.0%} of words contain OCR debris (e.g. {work.words[0].word!r})",
        }
    clips = []
    voice = None
    for program in cfg.programs:
        clip_id = f"{work.work_id}.{program}"
        path = Path(audio_dir) / f"{clip_id}.flac"
        if not path.exists():  # a second build reuses what is there
            if voice is None and cfg.render.vocals:
                voice = render_voice(work, cfg.render)
            wave = render_clip(work, program, cfg.render, voice)
            with atomic_path(path) as tmp:
                sf.write(tmp, wave, cfg.render.sample_rate, format="FLAC", subtype="PCM_16")
        clips.append({"clip_id": clip_id, "track_id": work.work_id, "program_name": program, "audio_path": str(path)})
    return {"rel_path": rel_path, "work": work_to_row(work), "words": [asdict(w) for w in work.words], "clips": clips}


def work_to_row(work: SongbookWork) -> dict:
    return {
        "track_id": work.work_id,
        "title": work.title,
        "artist": work.artist,
        "genre": work.genre,
        "language": work.language,
        "key": work.key,
        "mode": work.mode,
        "meter": work.meter,
        "parts": work.parts,
        "license": LICENSE,
        "source": f"{SOURCE}: {work.corpus_path}",
        "lyrics": work.lyrics,
        "duration_s": round(work.duration_s, 3),
    }


def build_partition(partition: str, audio_dir: Path, cfg: SongbookConfig) -> list[dict]:
    """Parse and render every work of `partition`. Returns one result dict per work (ok or error)."""
    paths = works_in_partition(partition, cfg.limit)
    audio_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(p, cfg, str(audio_dir)) for p in paths]
    if paths:  # warm music21 up in the parent so each forked worker starts with it loaded
        parse_work(paths[0])
    results = []
    with worker_context().Pool(max(1, min(cfg.workers, os.cpu_count() or 1)), initializer=default_signals, maxtasksperchild=1) as pool:
        for r in tqdm(pool.imap(_build_one, jobs), total=len(jobs), desc=f"songbook/{partition}", unit="work"):
            results.append(r)
        close_pool(pool)
    return results


def worker_context() -> mp.context.BaseContext:
    return mp.get_context("fork")


def close_pool(pool) -> None:
    """End a Pool whose work is done with close() + join(), never terminate() (what `with Pool` does on exit).

    With maxtasksperchild the pool keeps forking replacement workers; terminate() can miss one forked at that
    moment and then wait for it forever (seen as a hung test run). close() lets every worker take its stop
    sentinel and exit, so join() returns."""
    pool.close()
    pool.join()


def default_signals() -> None:
    """Pool initializer: forked workers drop the parent's (Dagster's) signal handlers, so that closing the
    pool ends them quietly instead of raising the parent's interrupt error in each worker."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
