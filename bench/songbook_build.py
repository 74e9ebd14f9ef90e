"""Benchmark: build the whole songbook from nothing, and the spectrogram throughput.

    .venv/bin/python bench/songbook_build.py [--limit N] [--out bench/results/songbook_build.json]

Builds every songbook partition into a fresh temporary LYRIC2VEC_HOME through the real Dagster assets
(parse + render + DuckDB + lyrics + spectrograms), then times the log-mel front-end alone on the rendered
clips (decode FLAC + resample-free log-mel, clips/s). Prints a table and writes the figures as JSON.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import torch

from lyric2vec_models.audio import LogMel, SpectrogramSpec, decode_audio
from lyric2vec_pipeline.assets.sources import SONGBOOK_PARTITION_KEYS
from lyric2vec_pipeline.cli import materialize_partition
from lyric2vec_pipeline.resources import LyricHome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="works per partition (0 = the whole songbook)")
    parser.add_argument("--out", default="bench/results/songbook_build.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="l2v-bench-") as tmp:
        home = LyricHome(home=tmp)
        instance = dg.DagsterInstance.ephemeral()
        run_config = {"ops": {"songbook_sources": {"config": {"limit": args.limit}}}}
        per_partition = {}
        t0 = time.perf_counter()
        for key in SONGBOOK_PARTITION_KEYS:
            t = time.perf_counter()
            if not materialize_partition(instance, home, key, run_config):
                raise SystemExit(f"{key}: materialization failed")
            per_partition[key] = round(time.perf_counter() - t, 1)
        build_s = time.perf_counter() - t0
        with home.connect(read_only=True) as con:
            n_tracks, n_lyrics = con.execute("SELECT count(*), count(*) FILTER (has_lyrics) FROM tracks").fetchone()
            n_clips = con.execute("SELECT count(*) FROM clips").fetchone()[0]
            n_quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            paths = [r[0] for r in con.execute("SELECT audio_path FROM clips ORDER BY clip_id LIMIT 200").fetchall()]

        spec = SpectrogramSpec()
        logmel = LogMel(spec)
        torch.set_num_threads(1)
        t = time.perf_counter()
        for p in paths:
            logmel(decode_audio(p, spec.sample_rate)).numpy().astype(np.float16)
        mel_rate = len(paths) / (time.perf_counter() - t)

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "works_limit_per_partition": args.limit,
        "build_seconds": round(build_s, 1),
        "build_seconds_by_partition": per_partition,
        "tracks": n_tracks,
        "tracks_with_lyrics": n_lyrics,
        "clips": n_clips,
        "quarantined": n_quarantined,
        "spectrogram_clips_per_second_1_thread": round(mel_rate, 1),
        "target_build_seconds": 180,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for k, v in figures.items():
        print(f"{k:40s} {v}")


if __name__ == "__main__":
    main()
