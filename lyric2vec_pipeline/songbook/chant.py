"""Unlimited (text, chanted audio) pairs made with the songbook renderer's own code path: the training data
of the chant recogniser (lyric2vec_models.asr) and the held-out re-rendering of the lyrics-retrieval protocol.

Each example is a synthetic `SongbookWork`: a word sequence (a slice of a source lyric, words drawn
from a vocabulary, or made-up syllable words), one word per note onset at a random tempo, a melody
random walk with 0-3 harmony parts, rendered with `render_instruments` on a random General MIDI
program and `render_voice` (espeak-ng, the songbook's chant) at random gains and speech rates. The
label is the normalised character string of the words whose onsets fall inside the clip.

espeak-ng keeps internal state between utterances, so every example is rendered in a fresh forked
process (`generate`): its samples depend only on its seed, the text source and the config.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from lyric2vec_models.asr import normalise_chars
from lyric2vec_pipeline.songbook import render as R
from lyric2vec_pipeline.songbook.build import close_pool
from lyric2vec_pipeline.songbook.corpus import NoteEvent, SongbookWork, Word

# Programs kept OUT of training so the held-out re-rendering uses timbres never heard:
# choir aahs / voice oohs / synth voice (52-54), clarinet (71), piccolo / flute (72-73).
HELD_OUT_PROGRAMS = (52, 53, 54, 71, 72, 73)
TRAIN_PROGRAMS = tuple(p for p in range(0, 112) if p not in HELD_OUT_PROGRAMS)  # no percussive/sfx banks

@dataclass(frozen=True)
class ChantConfig:
    seconds: float = 10.0  # clip length
    sample_rate: int = 22_050
    soundfont: str = ""  # "" = TimGM6mb (the songbook's)
    programs: tuple[int, ...] = TRAIN_PROGRAMS
    voice_suffix: str = ""  # e.g. "+m3": an espeak voice variant appended to every language voice
    rate_range: tuple[int, int] = (170, 210)  # espeak words per minute
    qpm_range: tuple[float, float] = (60.0, 140.0)
    instrument_gain_range: tuple[float, float] = (0.2, 0.8)
    voice_gain_range: tuple[float, float] = (0.5, 1.0)
    p_source_slice: float = 0.5  # a contiguous slice of a source text, else words drawn one by one
    p_pseudo_word: float = 0.15  # a drawn word is a made-up syllable word (forces spelling, not memory)
    languages: dict = field(
        default_factory=lambda: {"German": 0.6, "Italian": 0.25, "Latin": 0.1, "English": 0.05}
    )


@dataclass
class TextSource:
    """Texts per language (training-only lyrics) and the word vocabulary drawn from them."""

    texts: dict[str, list[list[str]]]  # language -> list of word lists

    @classmethod
    def from_lyrics(cls, lyrics: Sequence[str], languages: Sequence[str]) -> TextSource:
        texts: dict[str, list[list[str]]] = {}
        for text, lang in zip(lyrics, languages, strict=True):
            words = [w for w in text.split() if normalise_chars(w)]
            if words:
                texts.setdefault(lang if lang in R.ESPEAK_VOICES else "German", []).append(words)
        return cls(texts)

    def vocabulary(self, language: str) -> list[str]:
        pool = self.texts.get(language) or [w for ws in self.texts.values() for w in ws]
        return sorted({w for ws in pool for w in ws})


_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "sch",
    "st",
    "tr",
    "gl",
]
_VOWELS = ["a", "e", "i", "o", "u", "ei", "au", "ie", "ä", "ö", "ü"]
_CODAS = ["", "", "", "n", "r", "s", "t", "m", "l", "ch", "nd"]


def pseudo_word(rng: np.random.Generator) -> str:
    return "".join(
        str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS))
        for _ in range(int(rng.integers(1, 4)))
    )


def draw_words(
    rng: np.random.Generator, source: TextSource, language: str, n: int, cfg: ChantConfig
) -> list[str]:
    pool = source.texts.get(language) or [ws for v in source.texts.values() for ws in v]
    if rng.random() < cfg.p_source_slice:
        out: list[str] = []
        while len(out) < n:
            ws = pool[int(rng.integers(len(pool)))]
            start = int(rng.integers(max(1, len(ws) - 3)))
            out += ws[start : start + n - len(out)]
        return out
    vocab = source.vocabulary(language)
    return [pseudo_word(rng) if rng.random() < cfg.p_pseudo_word else vocab[int(rng.integers(len(vocab)))]
            for _ in range(n)]  # fmt: skip


def synthetic_work(
    rng: np.random.Generator, words: list[str], language: str, cfg: ChantConfig
) -> SongbookWork:
    """One word per melody onset at a random tempo; harmony parts under the melody."""
    beat = 60.0 / rng.uniform(*cfg.qpm_range)
    gaps = rng.choice([0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 2.0, 3.0], size=len(words)) * beat
    onsets = np.concatenate([[rng.uniform(0.0, 0.8)], np.cumsum(gaps)[:-1] + 0.0])
    pitch = int(rng.integers(60, 72))
    n_parts = int(rng.integers(1, 5))
    intervals = [0] + sorted(
        rng.choice([-3, -4, -5, -7, -8, -9, -12, -15], size=n_parts - 1, replace=False).tolist()
    )
    ws, notes = [], []
    for w, t0, gap in zip(words, onsets, gaps, strict=True):
        pitch = int(np.clip(pitch + rng.choice([-4, -2, -1, 0, 1, 2, 3, 5]), 52, 79))
        ws.append(Word(w, float(t0), 1, pitch))
        for part, iv in enumerate(intervals):
            notes.append(NoteEvent(part, pitch + int(iv), float(t0), float(gap)))
    return SongbookWork(
        work_id="synthetic", corpus_path="", collection="synthetic", partition="synthetic", title="", artist="",
        genre="", language=language, key="", mode="", meter="", parts=n_parts, qpm=60.0 / beat,
        duration_s=float(onsets[-1] + gaps[-1]), words=ws, notes=notes,
    )  # fmt: skip


def render_example(seed: int, source: TextSource, cfg: ChantConfig) -> tuple[np.ndarray, str]:
    """(samples,) float32 clip and its label text (normalised) for one seed. Call in a fresh process
    (see `generate`) when bit-exact repeatability matters: espeak-ng's state carries across calls."""
    rng = np.random.default_rng(seed)
    langs = [lang for lang in cfg.languages if lang in source.texts] or list(source.texts)
    p = np.array([cfg.languages.get(lang, 0.1) for lang in langs])
    language = langs[int(rng.choice(len(langs), p=p / p.sum()))]
    words = draw_words(rng, source, language, 40, cfg)
    work = synthetic_work(rng, words, language, cfg)
    rcfg = R.RenderConfig(
        sample_rate=cfg.sample_rate, seconds=cfg.seconds, soundfont=cfg.soundfont,
        instrument_gain=float(rng.uniform(*cfg.instrument_gain_range)),
        voice_gain=float(rng.uniform(*cfg.voice_gain_range)),
        voice_rate=int(rng.integers(cfg.rate_range[0], cfg.rate_range[1] + 1)),
    )  # fmt: skip
    program = int(rng.choice(cfg.programs))
    voice = render_voice_with(work, rcfg, cfg.voice_suffix)
    mix = rcfg.instrument_gain * R.render_instruments(work, program, rcfg) + rcfg.voice_gain * voice
    peak = float(np.abs(mix).max())
    mix = mix * (0.9 / peak) if peak > 0 else mix
    heard = [w.word for w in work.words if w.onset_s < cfg.seconds - 0.15]
    return mix.astype(np.float32), normalise_chars(" ".join(heard))


def render_voice_with(work: SongbookWork, rcfg: R.RenderConfig, voice_suffix: str = "") -> np.ndarray:
    """`render.render_voice`, optionally with an espeak voice variant (e.g. "+m3") on every language."""
    if not voice_suffix:
        return R.render_voice(work, rcfg)
    saved = dict(R.ESPEAK_VOICES)
    try:
        R.ESPEAK_VOICES.update({k: v + voice_suffix for k, v in saved.items()})
        return R.render_voice(work, rcfg)
    finally:
        R.ESPEAK_VOICES.clear()
        R.ESPEAK_VOICES.update(saved)


def _one(args) -> tuple[np.ndarray, str]:
    seed, source, cfg, as_mel = args
    import torch

    torch.set_num_threads(1)
    wave, text = render_example(int(seed), source, cfg)
    if as_mel:
        from lyric2vec_models.audio import LogMel, SpectrogramSpec

        mel = LogMel(replace(SpectrogramSpec(), sample_rate=cfg.sample_rate, clip_seconds=cfg.seconds))
        return mel(wave).numpy().astype(np.float16), text
    return wave, text


def generate(
    seeds: Sequence[int],
    source: TextSource,
    cfg: ChantConfig,
    batch: int = 16,
    workers: int = 1,
    as_mel: bool = False,
):
    """Yield (items, labels) per batch of `batch` seeds. Every example is rendered in a fresh forked
    process (espeak-ng state), so an example depends only on its seed, `source` and `cfg`.

    items are waveforms, or float16 (64, frames) log-mels (the project's SpectrogramSpec) with as_mel.
    """
    jobs = [(s, source, cfg, as_mel) for s in seeds]
    items, labels = [], []
    with mp.get_context("fork").Pool(workers, maxtasksperchild=1) as pool:
        for item, label in pool.imap(_one, jobs):
            items.append(item)
            labels.append(label)
            if len(items) == batch:
                yield items, labels
                items, labels = [], []
        close_pool(pool)
    if items:
        yield items, labels


# ---------------------------------------------------------------- held-out re-rendering of songbook works


@dataclass(frozen=True)
class RerenderConfig:
    """A rendering the recogniser never heard: other soundfont, instruments and voice than the songbook's."""

    soundfont: str = "/usr/share/sounds/sf2/FluidR3_GM.sf2"  # Debian fluid-soundfont-gm (songbook: TimGM6mb)
    programs: tuple[str, ...] = ("choir", "flute", "clarinet")  # all in HELD_OUT_PROGRAMS
    voice_suffix: str = "+m3"  # espeak-ng voice variant on every language
    voice_rate: int = 160  # words per minute (songbook: 190)

    def program_for(self, track_id: str) -> str:
        import zlib

        return self.programs[zlib.crc32(track_id.encode()) % len(self.programs)]


def _rerender_one(args) -> tuple[str, str, np.ndarray]:
    track_id, rel_path, cfg = args
    import torch

    torch.set_num_threads(1)
    from lyric2vec_models.audio import LogMel, SpectrogramSpec
    from lyric2vec_pipeline.songbook.corpus import parse_work

    work = parse_work(rel_path)
    rcfg = R.RenderConfig(soundfont=cfg.soundfont, voice_rate=cfg.voice_rate)
    program = cfg.program_for(track_id)
    wave = R.render_clip(work, program, rcfg, render_voice_with(work, rcfg, cfg.voice_suffix))
    return track_id, program, LogMel(SpectrogramSpec())(wave).numpy().astype(np.float16)


def rerender(works: Sequence[tuple[str, str]], cfg: RerenderConfig, workers: int = 1):
    """Yield (track_id, program, float16 (64, frames) log-mel of the first 30 s) for (track_id, corpus path)
    pairs, each rendered in a fresh forked process (espeak-ng state), in input order."""
    from pathlib import Path

    if not Path(cfg.soundfont).is_file():
        raise FileNotFoundError(
            f"{cfg.soundfont}: soundfont missing; install Debian's fluid-soundfont-gm (make setup does) "
            "or point the held-out rendering at another General MIDI .sf2"
        )
    jobs = [(t, p, cfg) for t, p in works]
    with mp.get_context("fork").Pool(workers, maxtasksperchild=1) as pool:
        yield from pool.imap(_rerender_one, jobs)
        close_pool(pool)
