"""Held-out re-rendering of every work that is in a test split for some protocol seed.

Other soundfont (Debian FluidR3_GM), other programs (choir aahs / flute / clarinet: kept out of the
recogniser's training programs), other voice (espeak variant "+m3" on every language, 160 words/min
instead of the songbook's 190). One 30-s clip per work -> OUT/heldout_render/{mels.npy,tracks.json}.

    .venv/bin/python bench/retrieval/render_heldout.py
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, catalogue, protocol_splits  # noqa: E402

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
PROGRAMS = ("choir", "flute", "clarinet")
VOICE_SUFFIX = "+m3"
VOICE_RATE = 160


def program_for(track_id: str) -> str:
    return PROGRAMS[zlib.crc32(track_id.encode()) % len(PROGRAMS)]


def _one(args):
    track_id, rel_path = args
    import torch

    torch.set_num_threads(1)
    from lyric2vec_models.audio import LogMel, SpectrogramSpec
    from lyric2vec_models.chant_data import render_voice_with
    from lyric2vec_pipeline.songbook import render as R
    from lyric2vec_pipeline.songbook.corpus import parse_work

    work = parse_work(rel_path)
    cfg = R.RenderConfig(soundfont=SOUNDFONT, voice_rate=VOICE_RATE)
    voice = render_voice_with(work, cfg, VOICE_SUFFIX)
    wave = R.render_clip(work, program_for(track_id), cfg, voice)
    return track_id, LogMel(SpectrogramSpec())(wave).numpy().astype(np.float16)


def main() -> None:
    import duckdb

    cat = catalogue()
    splits = protocol_splits(cat)
    test_any = np.zeros(len(cat), bool)
    for s in splits.values():
        test_any |= s == "test"
    con = duckdb.connect(str(Path(__import__("common").HOME) / "catalogue.duckdb"), read_only=True)
    src = dict(con.sql("SELECT track_id, source FROM tracks").fetchall())
    ids = [t for t, m in zip(cat["track_id"], test_any, strict=True) if m]
    prefix = "music21 core corpus: "
    jobs = [(t, src[t][len(prefix) :]) for t in ids]
    out = OUT / "heldout_render"
    out.mkdir(parents=True, exist_ok=True)
    t0, mels, tracks = time.time(), [], []
    with mp.get_context("fork").Pool(1, maxtasksperchild=1) as pool:
        for tid, mel in pool.imap(_one, jobs):
            tracks.append(tid)
            mels.append(mel)
    np.save(out / "mels.npy", np.stack(mels))
    (out / "tracks.json").write_text(json.dumps({"tracks": tracks, "programs": [program_for(t) for t in tracks],
                                                 "soundfont": SOUNDFONT, "voice_suffix": VOICE_SUFFIX,
                                                 "voice_rate": VOICE_RATE}))  # fmt: skip
    print(f"{len(tracks)} works re-rendered in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
