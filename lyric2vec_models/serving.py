"""Search over a LYRIC2VEC_HOME: one model plus its gallery indexes, swapped atomically on reload.

Framework-free (no BentoML): the service in bento/ is a thin HTTP shell around `SearchEngine`, and the
benchmarks and tests can drive the engine directly. Files read, relative to the home:

    models/current/                         a saved model directory (a symlink to models/<version> is fine)
    indexes/{audio,lyrics,fused}/           galleries written by `lyric2vec_models.index.save_gallery`:
        index.faiss, ids.npy, manifest.json, tracks.parquet (track_id, title, artist, genre; optional)

A request works on one immutable `Snapshot` (encoder + galleries of the same model_version), taken at its
start; a reload builds a complete new snapshot next to the old one and swaps one reference under a lock,
so no request sees half of each and none is dropped.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lyric2vec_models.artifacts import ArtifactError
from lyric2vec_models.audio import AudioError, decode_audio
from lyric2vec_models.index import MANIFEST_FILE, GalleryIndex, load_gallery

log = logging.getLogger(__name__)

GALLERIES = ("audio", "lyrics", "fused")
MODALS = ("text", "audio", "fused")
DEFAULT_TARGET = {"text": "audio", "audio": "lyrics", "fused": "fused"}  # cross-modal by default


def default_home() -> Path:
    return Path(os.environ.get("LYRIC2VEC_HOME", "./artifacts"))


@dataclass(frozen=True)
class Limits:
    max_k: int = 1000  # results per query
    max_query_chars: int = 2000  # text query length
    max_audio_bytes: int = 10 * 1024 * 1024  # decoded (not base64) audio file size
    max_audio_seconds: float = 60.0  # audio query duration
    max_embed_items: int = 64  # texts or clips per /embed call

    @property
    def max_audio_b64_chars(self) -> int:
        return 4 * ((self.max_audio_bytes + 2) // 3)


class QueryError(ValueError):
    """Bad input from a client: `reason` is a stable code, `detail` says what to change, `status` is 4xx."""

    def __init__(self, reason: str, detail: str, status: int = 400):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, status


class MicroBatcher:
    """Merges concurrent calls of a batch function: `fn(list of items) -> array of rows, one per item`.

    No timer and no extra thread: a caller that finds the function idle runs it on everything queued so far
    (its own item included); callers arriving meanwhile queue up and are served together by the next run.
    An idle server therefore adds no wait, and a loaded one turns N one-row passes into one N-row pass; on
    CPU a short text's pass is bound by reading the weights, so 4 texts cost about 1.5x one (see bench/serve).
    An exception in `fn` is raised in every caller of that batch; the next batch runs normally.
    """

    def __init__(self, fn, max_batch: int = 32):
        self.fn, self.max_batch = fn, max_batch
        self._cond = threading.Condition()
        self._queue: list[list] = []  # slots waiting for a pass, first come first served
        self._running = False
        self.batches = 0  # how many passes ran, and over how many items: the mean batch size is items/batches
        self.items = 0
        self.largest = 0

    def __call__(self, item):
        slot = [item, None, None, False]  # item, result, error, done
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while not slot[3] and self._running:
                    self._cond.wait()
                if slot[3]:
                    return self._result(slot)
                self._running = True  # this caller runs the next batch (its own item is in the queue)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                rows = self.fn([s[0] for s in batch])
                for s, row in zip(batch, rows, strict=True):
                    s[1] = row
            except BaseException as exc:
                for s in batch:
                    s[2] = exc
            with self._cond:
                for s in batch:
                    s[3] = True
                self.batches += 1
                self.items += len(batch)
                self.largest = max(self.largest, len(batch))
                self._running = False
                self._cond.notify_all()
            # loop: done if this caller's item was in the batch, else (over max_batch queued) run again

    @staticmethod
    def _result(slot):
        if slot[2] is not None:
            raise slot[2]
        return slot[1]


@dataclass
class Snapshot:
    """Everything one request needs, loaded completely before it is published."""

    encoder: object  # lyric2vec_models.inference.Lyric2VecEncoder
    model_version: str
    model_dir: Path
    galleries: dict[str, GalleryIndex]
    track_info: dict[str, dict[str, tuple]]  # gallery -> track_id -> (title, artist, genre)
    fingerprint: tuple  # (path, mtime_ns, size) of every manifest: what the watcher compares
    loaded_at: float = field(default_factory=time.time)
    text_batcher: MicroBatcher = field(init=False)  # concurrent text queries share one encoder pass

    def __post_init__(self) -> None:
        self.text_batcher = MicroBatcher(self.encoder.encode_text)

    def describe(self) -> dict:
        return {
            "model_version": self.model_version,
            "model_dir": str(self.model_dir),
            "galleries": {
                name: {"ntotal": g.ntotal, "index_type": g.index_type, "dim": g.dim}
                for name, g in self.galleries.items()
            },
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.loaded_at)),
        }


def home_fingerprint(home: Path) -> tuple:
    """Cheap change detector: stat of the model manifest and every gallery manifest (atomic renames move it)."""
    paths = [home / "models" / "current" / "manifest.json"] + [
        home / "indexes" / g / MANIFEST_FILE for g in GALLERIES
    ]
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p.resolve()), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), None, None, None))
    return tuple(out)


def load_snapshot(
    home: str | Path, device: str = "cpu", text_dtype: str = "auto", compile_text: bool = False
) -> Snapshot:
    """Load the current model and every gallery present; all must share its model_version (ArtifactError).

    `text_dtype` "auto" runs the frozen text transformer in bfloat16 where the hardware does it natively;
    `compile_text` torch.compiles it (compiled during this call, not on a request). See text.TextEncoder.
    """
    from lyric2vec_models.inference import Lyric2VecEncoder  # torch: only when a snapshot is built

    home = Path(home)
    fingerprint = home_fingerprint(home)
    model_dir = (home / "models" / "current").resolve()
    if not (model_dir / "manifest.json").is_file():
        raise ArtifactError(
            f"{home / 'models' / 'current'}: no model directory (expected a saved model with manifest.json); "
            "train and export a model first, or set LYRIC2VEC_HOME"
        )
    encoder = Lyric2VecEncoder.load(model_dir, device=device, text_dtype=text_dtype, compile_text=compile_text)
    galleries, track_info = {}, {}
    for name in GALLERIES:
        directory = home / "indexes" / name
        if not (directory / MANIFEST_FILE).exists():
            log.warning("gallery %s: no index at %s; searches that target it get 503", name, directory)
            continue
        gallery = load_gallery(directory, model_version=encoder.model_version)
        if gallery.dim != encoder.dim:
            raise ArtifactError(
                f"{directory / MANIFEST_FILE}: dim {gallery.dim} but the model embeds in {encoder.dim}"
            )
        galleries[name] = gallery
        track_info[name] = _track_info(gallery)
    if not galleries:
        raise ArtifactError(
            f"{home / 'indexes'}: no gallery index (audio, lyrics or fused); build the indexes first"
        )
    if encoder.model.text.transformer is None:  # the frozen tower runs in TextEncoder (a fine-tuned one in the model)
        encoder.text_encoder.warm_up()  # loads (and compiles) the text tower now, not on the first request
    encoder.encode_text(["warm-up"])
    return Snapshot(encoder, encoder.model_version, model_dir, galleries, track_info, fingerprint)


def _track_info(gallery: GalleryIndex) -> dict[str, tuple]:
    if gallery.tracks is None:
        return {}
    cols = [gallery.tracks.column(c).to_pylist() for c in ("track_id", "title", "artist", "genre")]
    return {str(tid): (title, artist, genre) for tid, title, artist, genre in zip(*cols, strict=True)}


def decode_audio_b64(data: str, spec_rate: int, limits: Limits) -> np.ndarray:
    """Base64 text of an audio file -> mono float32 wave at `spec_rate`; QueryError with the reason otherwise."""
    if data.startswith("data:") and "," in data[:100]:  # data URLs from browsers: data:audio/wav;base64,...
        data = data.split(",", 1)[1]
    if len(data) > limits.max_audio_b64_chars:
        raise QueryError(
            "audio_too_large",
            f"audio_b64 holds about {len(data) * 3 // 4} bytes; the limit is {limits.max_audio_bytes} bytes",
            413,
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QueryError("invalid_base64", f"audio_b64 is not valid base64 ({exc})") from exc
    if len(raw) > limits.max_audio_bytes:
        raise QueryError(
            "audio_too_large", f"{len(raw)} bytes of audio; the limit is {limits.max_audio_bytes}", 413
        )
    try:
        return decode_audio(raw, spec_rate, max_seconds=limits.max_audio_seconds)
    except AudioError as exc:
        msg = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the audio", str(exc).replace("<bytes>: ", ""))
        if "silent" in msg:
            raise QueryError("silent_audio", msg, 422) from exc
        if "over the limit" in msg:
            raise QueryError("audio_too_long", msg, 413) from exc
        raise QueryError("undecodable_audio", msg + "; send a wav, flac, ogg or mp3 file", 422) from exc


class SearchEngine:
    """Encodes queries and searches the galleries of the current snapshot; `reload` swaps in a new one."""

    def __init__(
        self,
        home: str | Path | None = None,
        limits: Limits | None = None,
        device: str = "cpu",
        text_dtype: str = "auto",
        compile_text: bool = False,
    ):
        self.home = Path(home) if home is not None else default_home()
        self.limits = limits or Limits()
        self.device = device
        self.text_options = {"text_dtype": text_dtype, "compile_text": compile_text}
        self._swap_lock = threading.Lock()  # guards the reference swap
        self._reload_lock = threading.Lock()  # one reload at a time (loading happens outside _swap_lock)
        self._snapshot = load_snapshot(self.home, device, **self.text_options)
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.reloads = 0
        self.on_swap: list = []  # callables run after each swap (e.g. metric gauges)
        log.info("serving %s", self._snapshot.describe())

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot  # a single attribute read: atomic under the GIL

    def reload(self, force: bool = True) -> dict:
        """Load model + galleries fully, then swap. On any error the old snapshot keeps serving."""
        with self._reload_lock:
            if not force and home_fingerprint(self.home) == self._snapshot.fingerprint:
                return {"swapped": False, **self._snapshot.describe()}
            t0 = time.perf_counter()
            new = load_snapshot(self.home, self.device, **self.text_options)
            old = self._snapshot
            with self._swap_lock:
                self._snapshot = new
            self.reloads += 1
            for callback in self.on_swap:
                callback()
            log.info(
                "reloaded in %.2f s: %s -> %s", time.perf_counter() - t0, old.model_version, new.describe()
            )
            return {"swapped": True, "previous_model_version": old.model_version, **new.describe(),
                    "load_s": round(time.perf_counter() - t0, 3)}  # fmt: skip

    def watch(self, every_s: float) -> None:
        """Poll the manifests every `every_s` seconds and reload when one changed (each worker on its own)."""

        def loop():
            failed = None  # fingerprint of a home that did not load: not retried until it changes again
            while not self._stop.wait(every_s):
                fingerprint = home_fingerprint(self.home)
                if fingerprint in (self._snapshot.fingerprint, failed):
                    continue
                try:
                    self.reload(force=False)
                    failed = None
                except Exception as exc:  # half-written home, mismatched versions: keep serving the old one
                    failed = fingerprint
                    log.warning("reload skipped, still serving %s: %s", self._snapshot.model_version, exc)

        self._watcher = threading.Thread(target=loop, name="lyric2vec-index-watcher", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ queries

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.limits.max_k:
            raise QueryError("k_out_of_range", f"k={k}; it must be between 1 and {self.limits.max_k}")

    def search(
        self,
        modal: str,
        query: str | None = None,
        audio_b64: str | None = None,
        k: int = 10,
        target: str | None = None,
    ) -> dict:
        """One search request -> {results, model_version, gallery, timings}; QueryError for bad input."""
        t0 = time.perf_counter()
        snap = self._snapshot
        if modal not in MODALS:
            raise QueryError("unknown_modal", f"modal {modal!r}; use one of {', '.join(MODALS)}")
        self.check_k(k)
        gallery_name = target or DEFAULT_TARGET[modal]
        if gallery_name not in GALLERIES:
            raise QueryError("unknown_target", f"target {gallery_name!r}; use one of {', '.join(GALLERIES)}")
        gallery = snap.galleries.get(gallery_name)
        if gallery is None:
            raise QueryError(
                "gallery_unavailable", f"no {gallery_name} index is loaded; build it and reload", 503
            )
        query = query.strip() if query else None
        if query is not None and len(query) > self.limits.max_query_chars:
            raise QueryError(
                "query_too_long",
                f"query has {len(query)} characters; the limit is {self.limits.max_query_chars}",
                413,
            )
        if modal == "text" and not query:
            raise QueryError("missing_query", "modal 'text' needs a non-empty 'query'")
        if modal == "audio" and not audio_b64:
            raise QueryError(
                "missing_query", "modal 'audio' needs 'audio_b64' (base64 of a wav/flac/ogg/mp3 file)"
            )
        if modal == "fused" and not query and not audio_b64:
            raise QueryError("missing_query", "modal 'fused' needs 'query', 'audio_b64' or both")

        wave = None
        if audio_b64 and modal in ("audio", "fused"):
            wave = decode_audio_b64(audio_b64, snap.encoder.spec.sample_rate, self.limits)
        t_decoded = time.perf_counter()
        z = self._encode(snap, modal, query, wave)
        t_encoded = time.perf_counter()
        scores, ids = gallery.search(z, k)
        t_searched = time.perf_counter()
        info = snap.track_info.get(gallery_name, {})
        results = []
        for score, tid in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            if not np.isfinite(score):
                continue  # approximate index returned fewer than k
            title, artist, genre = info.get(str(tid), (None, None, None))
            results.append({"track_id": str(tid), "title": title, "artist": artist, "genre": genre,
                            "score": float(np.clip(score, -1.0, 1.0))})  # fmt: skip
        return {
            "modal": modal,
            "gallery": gallery_name,
            "k": k,
            "model_version": snap.model_version,
            "results": results,
            "timings": {
                "decode_ms": (t_decoded - t0) * 1e3,
                "encode_ms": (t_encoded - t_decoded) * 1e3,
                "search_ms": (t_searched - t_encoded) * 1e3,
                "total_ms": (time.perf_counter() - t0) * 1e3,
            },
        }

    @staticmethod
    def _encode(snap: Snapshot, modal: str, query: str | None, wave: np.ndarray | None) -> np.ndarray:
        enc = snap.encoder
        if modal == "text":
            return snap.text_batcher(query)[None]  # (1, d)
        if modal == "audio":
            return enc.encode_audio(wave)[None]  # (1, d)
        z_text = snap.text_batcher(query)[None] if query else None
        z_audio = enc.encode_audio(wave)[None] if wave is not None else None
        fused, _gates = enc.fuse(z_text, z_audio, None)  # metadata view masked: a query has no artist
        return fused

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N,) texts -> (N, d) normalised vectors of the current model."""
        return self._snapshot.encoder.encode_text(list(texts))

    def embed_audio(self, clips_b64: list[str]) -> np.ndarray:
        snap = self._snapshot
        waves = [decode_audio_b64(c, snap.encoder.spec.sample_rate, self.limits) for c in clips_b64]
        return np.stack([snap.encoder.encode_audio(w) for w in waves])
