"""HTTP edge of the service: Prometheus metrics, uniform JSON errors, /healthz and the body-size limit.

A plain ASGI middleware so that it sees every request, including those BentoML rejects before the API
function runs (malformed JSON, a k outside 1..1000): each one is counted and answered with
{"error": <reason code>, "detail": <what to change>}. prometheus_client is imported lazily: BentoML sets
PROMETHEUS_MULTIPROC_DIR in each worker after this module is imported, and /metrics (served by BentoML)
merges what every worker wrote there.
"""

from __future__ import annotations

import contextvars
import json
import time

# The API function writes {"modal", "reason"} into this per-request dict (shared with its worker thread).
REQUEST_NOTE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lyric2vec_note", default=None)
COUNTED_PATHS = {"/search": "search", "/embed": "embed", "/reload": "reload"}
MODAL_LABELS = {"text", "audio", "fused", "embed_text", "embed_audio", "reload"}
MAX_BODY_BYTES = 16 * 1024 * 1024  # base64 of the 10 MB audio limit is 13.4 MB, plus JSON
_state: dict = {"engine": None, "metrics": None}

# pydantic error location -> reason code (validation done by the typed request models)
FIELD_REASONS = {
    "modal": "unknown_modal",
    "k": "k_out_of_range",
    "query": "query_too_long",
    "audio_b64": "audio_too_large",
    "target": "unknown_target",
    "texts": "too_many_items",
}


def register_engine(engine) -> None:
    """Called by the service once its engine is loaded: /healthz reports it and the gauges follow it."""
    _state["engine"] = engine
    update_index_gauges()


def metrics() -> dict:
    if _state["metrics"] is None:
        from prometheus_client import Counter, Gauge, Histogram

        latency = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.12, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
        _state["metrics"] = {
            "request": Histogram("lyric2vec_request_seconds", "Request latency at the service edge",
                                 ["modal", "status"], buckets=latency),
            "encode": Histogram("lyric2vec_encode_seconds", "Query encoding time (decode excluded)",
                                ["modal"], buckets=latency),
            "faiss": Histogram("lyric2vec_faiss_search_seconds", "FAISS search time", ["gallery"],
                               buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)),
            "requests": Counter("lyric2vec_requests", "Requests by modal and HTTP status", ["modal", "status"]),
            "errors": Counter("lyric2vec_errors", "Rejected or failed requests by reason", ["reason"]),
            "vectors": Gauge("lyric2vec_index_vectors", "Vectors in each loaded gallery index", ["gallery"],
                             multiprocess_mode="livemostrecent"),
        }  # fmt: skip
    return _state["metrics"]


def update_index_gauges() -> None:
    engine = _state["engine"]
    if engine is None:
        return
    for name, gallery in engine.snapshot.galleries.items():
        metrics()["vectors"].labels(gallery=name).set(gallery.ntotal)


def observe_search(modal: str, gallery: str, timings: dict) -> None:
    m = metrics()
    m["encode"].labels(modal=modal).observe(timings["encode_ms"] / 1e3)
    m["faiss"].labels(gallery=gallery).observe(timings["search_ms"] / 1e3)


def error_body(reason: str, detail) -> bytes:
    return json.dumps({"error": reason, "detail": detail}).encode()


def _reason_from_bentoml(body: bytes) -> tuple[str, object]:
    """BentoML's validation answer {"error": "1 validation error...", "detail": [pydantic errors]} -> reason."""
    try:
        errors = json.loads(body).get("detail") or []
        first = errors[0]
    except Exception:
        return "invalid_request", body.decode("utf-8", "replace")[:500]
    loc = [str(x) for x in first.get("loc", [])]
    kind = first.get("type", "")
    detail = f"{'.'.join(loc) + ': ' if loc else ''}{first.get('msg', '')}"
    if kind == "json_invalid":
        return "malformed_json", detail
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "malformed_json", "the body must be a JSON object; " + detail
    if kind == "missing":
        return ("missing_modal" if loc[:1] == ["modal"] else "missing_field"), detail
    if loc and loc[0] in FIELD_REASONS and kind in ("string_too_long", "too_long", "literal_error",
                                                    "greater_than_equal", "less_than_equal"):  # fmt: skip
        return FIELD_REASONS[loc[0]], detail
    return "invalid_request", detail


class EdgeMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        if path == "/healthz" and scope["method"] == "GET":
            return await self._healthz(send)
        route = COUNTED_PATHS.get(path)
        if route is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)

        t0 = time.perf_counter()
        note: dict = {}
        token = REQUEST_NOTE.set(note)
        body_chunks: list[bytes] = []
        status_holder = {"status": 500}
        try:
            length = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        try:
            if length > MAX_BODY_BYTES:
                note["reason"] = "body_too_large"
                detail = f"request body is {length} bytes; the limit is {MAX_BODY_BYTES}"
                await _send_json(send, 413, error_body("body_too_large", detail))
                status_holder["status"] = 413
                return

            async def receive_copy():
                message = await receive()
                if message["type"] == "http.request":
                    body_chunks.append(message.get("body", b""))
                return message

            await self._call_rewriting_errors(scope, receive_copy, send, note, status_holder)
        finally:
            REQUEST_NOTE.reset(token)
            self._count(route, note, body_chunks, status_holder["status"], time.perf_counter() - t0)

    async def _call_rewriting_errors(self, scope, receive, send, note, status_holder):
        """Pass the response through; a 4xx/5xx that our API code did not write gets our JSON error body."""
        held: dict = {}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status = message["status"]
                status_holder["status"] = status
                if status >= 400 and "reason" not in note:
                    held["start"] = message  # BentoML's own error: rewrite once the body is in
                    held["body"] = b""
                    return
                return await send(message)
            if message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                status = held["start"]["status"]
                if status < 500:
                    reason, detail = _reason_from_bentoml(held["body"])
                    status = 413 if reason in ("audio_too_large", "query_too_long") else status
                else:
                    reason, detail = "internal_error", "unexpected server error; see the server log"
                note["reason"] = reason
                status_holder["status"] = status
                return await _send_json(send, status, error_body(reason, detail))
            return await send(message)

        await self.app(scope, receive, send_wrapper)

    def _count(self, route: str, note: dict, body_chunks: list[bytes], status: int, seconds: float) -> None:
        modal = note.get("modal")
        if modal is None and route == "search" and status >= 400:
            try:  # the request never reached the API function: read its modal from the body
                modal = json.loads(b"".join(body_chunks)).get("modal")
            except Exception:
                modal = None
        if route == "reload":
            modal = "reload"
        label = modal if modal in MODAL_LABELS else "unknown"
        m = metrics()
        m["request"].labels(modal=label, status=str(status)).observe(seconds)
        m["requests"].labels(modal=label, status=str(status)).inc()
        if status >= 400:
            m["errors"].labels(reason=note.get("reason", "http_" + str(status))).inc()

    async def _healthz(self, send) -> None:
        engine = _state["engine"]
        if engine is None:
            return await _send_json(send, 503, json.dumps({"status": "loading"}).encode())
        body = {"status": "ok", "reloads": engine.reloads, **engine.snapshot.describe()}
        await _send_json(send, 200, json.dumps(body).encode())


async def _send_json(send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
