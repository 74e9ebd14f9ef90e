"""Audio in, log-mel out: decoding, resampling, downmixing, fixed windows and the spectrogram spec.

Used by the pipeline (songbook and user catalogues) and by the service (audio queries), so that a
query clip goes through exactly the same front-end as the gallery.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch


class AudioError(ValueError):
    """Audio that cannot be used: undecodable, empty, silent, too long. The message says which."""


@dataclass(frozen=True)
class SpectrogramSpec:
    sample_rate: int = 22_050  # Hz; every input is resampled to this
    n_fft: int = 1024  # samples per STFT frame (46 ms at 22.05 kHz)
    hop_length: int = 512  # samples between frames: 43.07 frames/s
    n_mels: int = 64  # mel bins
    fmin: float = 30.0  # Hz, lowest mel edge
    fmax: float = 11_025.0  # Hz, highest mel edge (Nyquist at 22.05 kHz)
    clip_seconds: float = 30.0  # length of one stored clip; longer tracks are cut into windows of this
    log_floor: float = 1e-5  # added before log so silence maps to log(1e-5) = -11.5, not -inf

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def clip_frames(self) -> int:
        """Frames of one clip: centered STFT gives 1 + samples // hop."""
        return 1 + self.clip_samples // self.hop_length

    def frames_for(self, seconds: float) -> int:
        return 1 + int(round(seconds * self.sample_rate)) // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


# Peak amplitude below which a clip counts as silent (-80 dBFS).
SILENCE_PEAK = 1e-4


def decode_audio(source: bytes | str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode wav/flac/ogg/mp3 from bytes or a path to mono float32 at `sample_rate`.

    Raises AudioError naming the source when the data is empty, undecodable, longer than
    `max_seconds` or silent.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise AudioError(f"{name}: empty audio (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: empty audio file (0 bytes)")
        handle = str(path)
    try:
        with sf.SoundFile(handle) as f:
            if "should be" in f.extra_info:  # libsndfile's log when a header promises more data than there is
                raise AudioError(f"{name}: truncated audio (header and data length disagree)")
            native_rate = f.samplerate
            if max_seconds is not None and f.frames > max_seconds * native_rate:
                raise AudioError(
                    f"{name}: audio is {f.frames / native_rate:.1f} s long, over the limit of {max_seconds:.0f} s"
                )
            data = f.read(dtype="float32", always_2d=True)  # (samples, channels)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile raises several types for corrupt data
        raise AudioError(f"{name}: cannot decode audio ({type(exc).__name__}: {exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{name}: decoded to zero samples (truncated or empty file)")
    wave = data.mean(axis=1)  # downmix (samples,)
    if native_rate != sample_rate:
        wave = librosa.resample(wave, orig_sr=native_rate, target_sr=sample_rate, res_type="soxr_hq")
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        raise AudioError(f"{name}: audio is silent (peak below {SILENCE_PEAK:g})")
    return wave


def fixed_windows(wave: np.ndarray, window_samples: int, min_fraction: float = 0.5) -> list[np.ndarray]:
    """Cut a waveform into consecutive, non-overlapping windows of exactly `window_samples`.

    Each sample lands in at most one window. A trailing remainder of at least `min_fraction` of a
    window is kept, zero-padded; a shorter one is dropped unless it is the only audio there is.
    """
    n = len(wave)
    windows = [wave[i : i + window_samples] for i in range(0, n - window_samples + 1, window_samples)]
    rest = n - len(windows) * window_samples
    if rest > 0 and (rest >= min_fraction * window_samples or not windows):
        tail = np.zeros(window_samples, dtype=wave.dtype)
        tail[:rest] = wave[n - rest :]
        windows.append(tail)
    return windows


class LogMel:
    """Waveform -> log-mel spectrogram with torch.stft and librosa's mel filterbank.

    Deterministic: the same samples give the same bytes, so spectrograms can be hashed.
    """

    def __init__(self, spec: SpectrogramSpec):
        self.spec = spec
        fb = librosa.filters.mel(
            sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax
        )
        self.filterbank = torch.from_numpy(fb).float()  # (n_mels, n_fft // 2 + 1)
        self.window = torch.hann_window(spec.n_fft)

    def __call__(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(samples,) or (B, samples) float -> (n_mels, frames) or (B, n_mels, frames) float32 log-mel."""
        x = torch.as_tensor(wave, dtype=torch.float32)
        stft = torch.stft(
            x,
            n_fft=self.spec.n_fft,
            hop_length=self.spec.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (..., n_fft // 2 + 1, frames)
        power = stft.real.square() + stft.imag.square()
        mel = torch.matmul(self.filterbank, power)  # (..., n_mels, frames)
        return torch.log(mel + self.spec.log_floor)


def clip_to_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Zero-pad or cut to exactly `samples` (used for fixed-length clips)."""
    if len(wave) >= samples:
        return wave[:samples]
    out = np.zeros(samples, dtype=np.float32)
    out[: len(wave)] = wave
    return out
