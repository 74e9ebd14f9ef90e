"""Preloaded by the forkserver that builds the catalogue (see `worker_context`): imports music21, torch and
the asset code once and parses one work, so every worker forked from it starts warm."""

import lyric2vec_pipeline.assets.catalogue  # noqa: F401  (spectrogram workers unpickle its functions)
from lyric2vec_pipeline.songbook.corpus import parse_work

parse_work("bach/bwv10.7.mxl")
