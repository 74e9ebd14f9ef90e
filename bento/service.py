"""Lyric2Vec search service: text -> songs by audio, audio -> songs by lyrics, fused -> fused vectors.

    bentoml serve bento.service:Lyric2Vec --host 127.0.0.1 --port 8080    (from the repo root)

A thin shell: the typed request models are the validation, `lyric2vec_models.serving.SearchEngine` does the
work, bento/edge.py counts requests and shapes every error as {"error": reason, "detail": ...}.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from bento.edge import (
    REQUEST_NOTE,
    EdgeMiddleware,
    error_body,
    observe_search,
    register_engine,
    update_index_gauges,
)

MAX_K, MAX_QUERY_CHARS, MAX_AUDIO_B64_CHARS, MAX_EMBED_ITEMS = (
    1000,
    2000,
    4 * ((10 * 1024 * 1024 + 2) // 3),
    64,
)


class SearchRequest(BaseModel):
    modal: Literal["text", "audio", "fused"] = Field(description="query kind")
    query: str | None = Field(None, max_length=MAX_QUERY_CHARS, description="lyrics or a description")
    audio_b64: str | None = Field(
        None, max_length=MAX_AUDIO_B64_CHARS, description="base64 of a wav/flac/ogg/mp3"
    )
    k: int = Field(10, ge=1, le=MAX_K, description="number of results")
    target: Literal["audio", "lyrics", "fused"] | None = Field(None, description="gallery; default by modal")


class Hit(BaseModel):
    track_id: str
    title: str | None
    artist: str | None
    genre: str | None
    score: float  # cosine in [-1, 1]


class Timings(BaseModel):
    decode_ms: float
    encode_ms: float
    search_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    modal: str
    gallery: str
    k: int
    model_version: str
    results: list[Hit]
    timings: Timings


class EmbedRequest(BaseModel):
    texts: list[Annotated[str, Field(max_length=MAX_QUERY_CHARS)]] | None = Field(
        None, max_length=MAX_EMBED_ITEMS
    )
    audio_b64: list[Annotated[str, Field(max_length=MAX_AUDIO_B64_CHARS)]] | None = Field(None, max_length=8)


class EmbedResponse(BaseModel):
    model_version: str
    dim: int
    vectors: list[list[float]]  # (N, dim), L2-normalised


def _error(reason: str, detail: str, status: int):
    from starlette.responses import Response

    note = REQUEST_NOTE.get()
    if note is not None:
        note["reason"] = reason
    return Response(error_body(reason, detail), status_code=status, media_type="application/json")


def _note(modal: str) -> None:
    note = REQUEST_NOTE.get()
    if note is not None:
        note["modal"] = modal


@bentoml.service(
    name="lyric2vec",
    workers=int(os.environ.get("LYRIC2VEC_WORKERS", "1")),
    threads=int(
        os.environ.get("LYRIC2VEC_THREADS", "4")
    ),  # concurrent API calls per worker (torch: 1 thread each)
    traffic={"timeout": 60, "max_concurrency": 256},
    http={"port": 8080},
)
class Lyric2Vec:
    def __init__(self) -> None:
        import faiss
        import torch

        from lyric2vec_models.serving import SearchEngine

        torch.set_num_threads(1)  # one core per worker thread; parallelism comes from workers and threads
        faiss.omp_set_num_threads(1)
        self.engine = SearchEngine(
            os.environ.get("LYRIC2VEC_HOME", "./artifacts"),
            text_dtype=os.environ.get("LYRIC2VEC_TEXT_DTYPE", "auto"),  # bfloat16 where native, else float32
            compile_text=os.environ.get("LYRIC2VEC_COMPILE_TEXT", "0") == "1",  # ~20 s more per worker start
        )
        register_engine(self.engine)
        self.engine.on_swap.append(update_index_gauges)
        watch_s = float(os.environ.get("LYRIC2VEC_WATCH_SECONDS", "10"))
        if watch_s > 0:  # every worker polls the manifests itself, so a POST /reload to one is not needed
            self.engine.watch(watch_s)

    def __is_ready__(self) -> bool:
        return self.engine.snapshot is not None

    @bentoml.api(route="/search")
    def search(self, request: SearchRequest, /) -> SearchResponse:
        """Search a gallery with a text, an audio clip or both (fused)."""
        from lyric2vec_models.serving import QueryError

        _note(request.modal)
        try:
            out = self.engine.search(
                request.modal, request.query, request.audio_b64, request.k, request.target
            )
        except QueryError as exc:
            return _error(exc.reason, exc.detail, exc.status)
        observe_search(out["modal"], out["gallery"], out["timings"])
        return SearchResponse(**out)

    @bentoml.api(route="/encode_texts", batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=20)
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Adaptive batching: concurrent calls are merged into one forward pass. (N,) -> (N, d)."""
        return self.engine.embed_texts(texts)

    @bentoml.api(route="/embed")
    async def embed(self, request: EmbedRequest, /) -> EmbedResponse:
        """Embed texts (adaptively batched across requests) or audio clips with the current model."""
        from anyio import to_thread

        from lyric2vec_models.serving import QueryError

        if bool(request.texts) == bool(request.audio_b64):
            _note("embed_text" if request.texts else "embed_audio")
            return _error(
                "missing_query", "send exactly one of 'texts' or 'audio_b64' (a non-empty list)", 400
            )
        version = self.engine.snapshot.model_version
        if request.texts:
            _note("embed_text")
            vectors = np.asarray(await self.to_async.encode_texts(request.texts), dtype=np.float32)
        else:
            _note("embed_audio")
            try:
                vectors = await to_thread.run_sync(self.engine.embed_audio, request.audio_b64)
            except QueryError as exc:
                return _error(exc.reason, exc.detail, exc.status)
        return EmbedResponse(model_version=version, dim=vectors.shape[1], vectors=vectors.tolist())

    @bentoml.api(route="/reload")
    async def reload(self) -> dict:
        """Load the current model and indexes from LYRIC2VEC_HOME fully, then swap them in atomically."""
        from anyio import to_thread

        try:  # loads in a worker thread outside the API limiter: searches keep being served meanwhile
            out = await to_thread.run_sync(self.engine.reload)
        except Exception as exc:  # a half-built or mismatched home: refuse, keep serving the old snapshot
            return _error(
                "reload_failed", f"{type(exc).__name__}: {exc}; still serving the previous index", 409
            )
        return out


Lyric2Vec.add_asgi_middleware(EdgeMiddleware)
