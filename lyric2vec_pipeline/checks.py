"""The data contracts (data_contracts/) run as Dagster asset checks over the whole catalogue."""


import dagster as dg
import numpy as np
import polars as pl

from data_contracts.contracts import Violation, check_clips, check_lyrics, check_spectrograms, check_tracks
from lyric2vec_models.audio import SpectrogramSpec
from lyric2vec_pipeline.assets.catalogue import lyrics, spectrograms, tracks
from lyric2vec_pipeline.resources import LyricHome


def _result(violations: list[Violation], **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not violations,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"violations": dg.MetadataValue.md("\n".join(f"- {v}" for v in violations) or "none"), **metadata},
    )


@dg.asset_check(asset=tracks, description="Unique non-empty ids, non-empty titles, a license on every track; clips belong to tracks.")
def tracks_contract(home: LyricHome) -> dg.AssetCheckResult:
    t, c = home.table("tracks"), home.table("clips")
    return _result(check_tracks(t) + check_clips(c, t), tracks=len(t), clips=len(c))


def read_lyrics(home: LyricHome) -> pl.DataFrame:
    files = sorted(home.path("lyrics").glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame({"track_id": [], "lyrics": []})


@dg.asset_check(asset=lyrics, description="UTF-8 text without control characters; NULL (not empty) for instrumentals.")
def lyrics_contract(home: LyricHome) -> dg.AssetCheckResult:
    df = read_lyrics(home)
    return _result(check_lyrics(df, home.table("tracks")), tracks=len(df))


@dg.asset_check(asset=spectrograms, description="Finite, non-silent float16 log-mels of the declared shape.")
def spectrograms_contract(home: LyricHome) -> dg.AssetCheckResult:
    spec = SpectrogramSpec(**__import__("json").loads(home.path("spectrograms", "spec.json").read_text()))
    violations, n = [], 0
    for part in sorted(p for p in home.path("spectrograms").iterdir() if p.is_dir() and not p.name.startswith(".")):
        mels = np.load(part / "mels.npy", mmap_mode="r")
        n += len(mels)
        violations += [Violation(v.rule, f"{part.name}: {v.detail}") for v in
                       check_spectrograms(mels, spec.n_mels, spec.clip_frames, spec.log_floor)]
    return _result(violations, clips=n)


catalogue_checks = [tracks_contract, lyrics_contract, spectrograms_contract]
