"""Offline, in-process rendering of a songbook work to audio.

Instruments: tinysoundfont with the TimGM6mb.sf2 that pretty_midi ships (or any .sf2 by path), every
part on one General MIDI program. Voice: espeak-ng through its C library (ctypes), one word at each
word onset, pitched near the melody note and cut at the next onset, so the audio carries the words.
Everything is deterministic: the same work and program give the same samples.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .corpus import SongbookWork

# name -> General MIDI program (0-based)
PROGRAMS: dict[str, int] = {
    "piano": 0,
    "organ": 19,
    "strings": 48,
    "choir": 52,
    "flute": 73,
    "guitar": 24,
    "harpsichord": 6,
    "clarinet": 71,
}
DEFAULT_PROGRAMS = ("piano", "organ", "strings")

ESPEAK_VOICES = {"German": "de", "Italian": "it", "Latin": "la", "English": "en"}


@dataclass(frozen=True)
class RenderConfig:
    sample_rate: int = 22_050  # Hz, mono output
    seconds: float = 30.0  # fixed clip length; longer works are cut, shorter ones zero-padded
    soundfont: str = ""  # path to an .sf2; "" = TimGM6mb.sf2 shipped in pretty_midi
    vocals: bool = True  # add the chanted espeak-ng voice at the word onsets
    instrument_gain: float = 0.5  # mix level of the instruments
    voice_gain: float = 0.9  # mix level of the voice
    voice_rate: int = 190  # espeak words per minute: fast enough that most words fit before the next onset


def default_soundfont() -> Path:
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def render_instruments(work: SongbookWork, program: int, cfg: RenderConfig) -> np.ndarray:
    """All parts of `work` on one GM program -> mono float32 of exactly cfg.seconds."""
    import tinysoundfont

    sr, total = cfg.sample_rate, int(round(cfg.seconds * cfg.sample_rate))
    synth = tinysoundfont.Synth(samplerate=sr)
    sfid = synth.sfload(str(cfg.soundfont or default_soundfont()))
    synth.program_select(0, sfid, 0, program)
    events: list[tuple[int, int, int]] = []  # (sample, 0=off/1=on, pitch); offs sort before ons
    for n in work.notes:
        start = int(round(n.onset_s * sr))
        if start >= total:
            continue
        events.append((start, 1, n.pitch))
        events.append((min(int(round((n.onset_s + n.duration_s) * sr)), total), 0, n.pitch))
    events.sort()
    out = np.zeros((total, 2), dtype=np.float32)
    pos = 0
    for sample, on, pitch in events:
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate(sample - pos), dtype=np.float32).reshape(-1, 2)
            pos = sample
        if on:
            synth.noteon(0, pitch, 80)
        else:
            synth.noteoff(0, pitch)
    if pos < total:
        out[pos:] = np.frombuffer(synth.generate(total - pos), dtype=np.float32).reshape(-1, 2)
    return out.mean(axis=1)


class _Espeak:
    """Minimal binding to libespeak-ng: synthesise one word to int16 samples at 22,050 Hz."""

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    CHARS_UTF8 = 1
    RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as exc:
            raise RuntimeError(
                "espeak-ng is not installed (needed for the chanted vocal track): "
                "run `apt-get install espeak-ng`, or turn vocals off with RenderConfig(vocals=False)"
            ) from exc
        self.sample_rate = self.lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if self.sample_rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise (espeak-ng-data missing?)")
        self._chunks: list[np.ndarray] = []

        def collect(wav, numsamples, events):
            if numsamples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
            return 0

        self._callback = self.CALLBACK(collect)  # keep a reference: ctypes must not free it
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.voice = ""

    def word(self, text: str, voice: str, pitch: int, rate: int) -> np.ndarray:
        if voice != self.voice:
            self.lib.espeak_SetVoiceByName(voice.encode())
            self.voice = voice
        self.lib.espeak_SetParameter(self.RATE, rate, 0)
        self.lib.espeak_SetParameter(self.PITCH, pitch, 0)
        self.lib.espeak_SetParameter(self.RANGE, 0, 0)  # monotone: a chant on one pitch per word
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, 1, 0, self.CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


@lru_cache(maxsize=1)
def _espeak() -> _Espeak:
    return _Espeak()


def render_voice(work: SongbookWork, cfg: RenderConfig) -> np.ndarray:
    """The first verse's words chanted at their onsets -> mono float32 of exactly cfg.seconds."""
    sr, total = cfg.sample_rate, int(round(cfg.seconds * cfg.sample_rate))
    out = np.zeros(total, dtype=np.float32)
    speaker = _espeak()
    if speaker.sample_rate != sr:
        raise RuntimeError(f"espeak-ng renders at {speaker.sample_rate} Hz, the songbook at {sr} Hz")
    voice = ESPEAK_VOICES.get(work.language, "en")
    first_verse = [w for w in work.words if w.verse == work.words[0].verse]
    for i, w in enumerate(first_verse):
        start = int(round(w.onset_s * sr))
        if start >= total:
            break
        nxt = first_verse[i + 1].onset_s if i + 1 < len(first_verse) else w.onset_s + 1.5
        room = max(int(round((nxt - w.onset_s) * sr)), int(0.15 * sr))
        # espeak pitch 0..99 ~ 70..300 Hz; map MIDI 48..79 onto it
        pitch = int(np.clip((w.midi_pitch - 48) * 3.2, 0, 99))
        samples = speaker.word(w.word, voice, pitch, cfg.voice_rate)[:room]
        fade = min(len(samples), int(0.02 * sr))
        if fade:
            samples[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        end = min(total, start + len(samples))
        out[start:end] += samples[: end - start]
    return out


def render_clip(
    work: SongbookWork, program_name: str, cfg: RenderConfig, voice: np.ndarray | None = None
) -> np.ndarray:
    """Instruments (+ voice) mixed and peak-normalised to 0.9 -> mono float32.

    `voice` lets a caller render the chant once and mix it under several programs.
    """
    mix = cfg.instrument_gain * render_instruments(work, PROGRAMS[program_name], cfg)
    if cfg.vocals:
        mix = mix + cfg.voice_gain * (render_voice(work, cfg) if voice is None else voice)
    peak = float(np.abs(mix).max())
    return mix * (0.9 / peak) if peak > 0 else mix
