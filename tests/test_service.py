"""The search service at three levels: the engine, the ASGI app (to_asgi), and the real `bentoml serve` process.

Everything runs over a tiny LYRIC2VEC_HOME built in a temp dir with a REAL model (tiny preset, random
init, saved with `train.save_model`) whose encoders produced the gallery vectors, as the pipeline does.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# BentoML workers read metrics from a multiprocess dir; the in-process ASGI app needs one too, set before
# prometheus_client is first imported (it decides its storage at import).
_PROM_PREIMPORTED = "prometheus_client" in sys.modules
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="l2v-prom-")

httpx = pytest.importorskip("httpx")
pa = pytest.importorskip("pyarrow")

from procs import free_port, start, stop, wait_http  # noqa: E402  (tests/ is on sys.path)

from lyric2vec_models.config import preset  # noqa: E402
from lyric2vec_models.index import build_gallery, save_gallery  # noqa: E402
from lyric2vec_models.inference import Lyric2VecEncoder  # noqa: E402
from lyric2vec_models.serving import MicroBatcher, QueryError, SearchEngine  # noqa: E402
from lyric2vec_models.train import build_model, save_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 22_050
ARTISTS = [f"artist{i}" for i in range(5)]
GENRES = ["chorale", "song", "madrigal"]
METRIC_NAMES = (
    "lyric2vec_request_seconds",
    "lyric2vec_encode_seconds",
    "lyric2vec_faiss_search_seconds",
    "lyric2vec_requests_total",
    "lyric2vec_errors_total",
    "lyric2vec_index_vectors",
)


# ---------------------------------------------------------------- fixtures: audio and a tiny home


def tone(freq: float, seconds: float = 1.5, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(wave: np.ndarray, sr: int = SR, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build_home(home: Path, n_tracks: int, seed: int) -> str:
    """models/current -> a tiny model (seed) and indexes/{audio,lyrics,fused} of its own encodings."""
    cfg = preset("tiny")
    cfg.seed = seed
    model = build_model(cfg, len(ARTISTS), len(GENRES))
    name = f"tiny-seed{seed}"
    version = save_model(model, cfg, home / "models" / name, artist_vocab=ARTISTS, genre_vocab=GENRES)
    link = home / "models" / f".current.{seed}.tmp"
    link.symlink_to(name)
    os.replace(link, home / "models" / "current")  # atomic symlink swap
    enc = Lyric2VecEncoder.load(home / "models" / name)
    ids = [f"s{seed}-t{i:03d}" for i in range(n_tracks)]
    artists = [ARTISTS[i % 5] for i in range(n_tracks)]
    genres = [GENRES[i % 3] for i in range(n_tracks)]
    z_text = enc.encode_text(
        [f"verse {i}: the river, the {['moon', 'sun', 'sea'][i % 3]}" for i in range(n_tracks)]
    )
    z_audio = np.stack([enc.encode_audio(tone(220 + 15 * i)) for i in range(n_tracks)])
    z_fused, _ = enc.fuse(z_text, z_audio, enc.encode_meta(artists, genres))
    tracks = pa.table({"track_id": ids, "title": [f"Song {i}" for i in range(n_tracks)],
                       "artist": artists, "genre": genres})  # fmt: skip
    for gallery, z in {"audio": z_audio, "lyrics": z_text, "fused": z_fused}.items():
        save_gallery(
            build_gallery(ids, z, version, tracks=tracks), home / "indexes" / gallery, gallery=gallery
        )
    return version


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("l2v_home")
    return path, build_home(path, n_tracks=40, seed=0)


def check_results(body: dict, k: int, version: str) -> None:
    assert body["model_version"] == version
    scores = [r["score"] for r in body["results"]]
    assert len(scores) == k
    assert all(np.isfinite(s) and -1.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert all(r["title"] and r["artist"] in ARTISTS and r["genre"] in GENRES for r in body["results"])
    assert set(body["timings"]) == {"decode_ms", "encode_ms", "search_ms", "total_ms"}
    assert body["timings"]["total_ms"] >= body["timings"]["encode_ms"] > 0


# ---------------------------------------------------------------- level 1: the engine


def test_engine_modals_and_reasons(home):
    path, version = home
    engine = SearchEngine(path)
    audio = b64(wav_bytes(tone(400)))
    for modal, kwargs, gallery in [
        ("text", {"query": "a song about the sea"}, "audio"),
        ("audio", {"audio_b64": audio}, "lyrics"),
        ("fused", {"query": "moon", "audio_b64": audio}, "fused"),
        ("text", {"query": "moon", "target": "lyrics"}, "lyrics"),
    ]:
        out = engine.search(modal, k=7, **kwargs)
        assert out["gallery"] == gallery
        check_results(out, 7, version)
    # the top audio hit for a gallery tone is that track in the audio gallery (same encoder, same input)
    out = engine.search("audio", audio_b64=b64(wav_bytes(tone(220 + 15 * 12))), k=1, target="audio")
    assert out["results"][0]["track_id"] == "s0-t012" and out["results"][0]["score"] > 0.999
    for kwargs, reason in [
        ({"modal": "lyrics", "query": "x"}, "unknown_modal"),
        ({"modal": "text"}, "missing_query"),
        ({"modal": "text", "query": "x", "k": 1001}, "k_out_of_range"),
        ({"modal": "audio", "audio_b64": "%%%"}, "invalid_base64"),
        ({"modal": "audio", "audio_b64": b64(wav_bytes(np.zeros(SR, np.float32)))}, "silent_audio"),
    ]:
        with pytest.raises(QueryError) as err:
            engine.search(**kwargs)
        assert err.value.reason == reason and 400 <= err.value.status < 500


def test_micro_batcher_merges_concurrent_calls_and_isolates_failures():
    seen: list[list[int]] = []
    gate = threading.Event()  # holds the first pass of a round until every other caller has queued

    def double(items):
        seen.append(list(items))
        if len(seen) in (2, 6):  # the first pass of each round below
            assert gate.wait(30)
        if -1 in items:
            raise RuntimeError("bad item")
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=4)
    assert batcher(21) == 42 and seen == [[21]]  # idle: runs at once, alone
    results: dict[int, object] = {}

    def call(x):
        try:
            results[x] = batcher(x)
        except RuntimeError as exc:
            results[x] = exc

    def round_of(xs):
        gate.clear()
        threads = [threading.Thread(target=call, args=(x,)) for x in xs]
        threads[0].start()  # finds the batcher idle: runs alone and waits at the gate
        while batcher._queue or not batcher._running:
            time.sleep(0.001)
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + 30
        while len(batcher._queue) < len(xs) - 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        gate.set()
        for t in threads:
            t.join()

    round_of(list(range(10)))
    assert results == {x: 2 * x for x in range(10)}  # each caller gets its own row
    assert sorted(x for b in seen[1:] for x in b) == list(range(10))  # every item encoded exactly once
    assert sorted(len(b) for b in seen[1:]) == [1, 1, 4, 4]  # 9 queued callers: 4 + 4 + 1, never over max_batch
    assert batcher.batches == 5 and batcher.items == 11 and batcher.largest == 4
    # a failing item fails its own batch only; the batcher keeps working afterwards
    round_of([100, -1, 101])
    assert results[100] == 200 and seen[-1] in ([-1, 101], [101, -1])
    assert isinstance(results[-1], RuntimeError) and isinstance(results[101], RuntimeError)
    assert batcher(5) == 10


def test_engine_concurrent_text_queries_match_one_at_a_time(home):
    path, version = home
    engine = SearchEngine(path)
    queries = [f"a song about the {w}" for w in ("sea", "moon", "sun", "river", "night", "rain", "wind", "snow")]
    alone = {q: engine.search("text", q, k=5)["results"] for q in queries}
    together: dict[str, list] = {}
    threads = [threading.Thread(target=lambda q=q: together.__setitem__(q, engine.search("text", q, k=5)["results"]))
               for q in queries * 3]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher = engine.snapshot.text_batcher
    assert batcher.items >= 8 + 24  # every query went through the shared encoder pass
    for q in queries:  # padding to a batch's longest text must not change a query's answer
        assert [r["track_id"] for r in together[q]] == [r["track_id"] for r in alone[q]]
        assert np.allclose([r["score"] for r in together[q]], [r["score"] for r in alone[q]], atol=2e-3)


def test_engine_refuses_mismatched_home_and_watcher_swaps(tmp_path):
    from lyric2vec_models.artifacts import ArtifactError

    v1 = build_home(tmp_path, n_tracks=12, seed=2)
    engine = SearchEngine(tmp_path)
    assert engine.snapshot.model_version == v1
    # new weights but old indexes: refused, naming the manifest; the loaded snapshot keeps serving
    cfg = preset("tiny")
    cfg.seed = 3
    save_model(build_model(cfg, len(ARTISTS), len(GENRES)), cfg, tmp_path / "models" / "other",
               artist_vocab=ARTISTS, genre_vocab=GENRES)  # fmt: skip
    (tmp_path / "models" / "current").unlink()
    (tmp_path / "models" / "current").symlink_to("other")
    with pytest.raises(ArtifactError, match=r"manifest\.json: index built for model_version"):
        engine.reload()
    assert engine.search("text", "sea", k=3)["model_version"] == v1
    # a consistent new home is picked up by the manifest watcher alone
    engine.watch(0.2)
    v2 = build_home(tmp_path, n_tracks=15, seed=4)
    deadline = time.monotonic() + 60
    while engine.snapshot.model_version != v2 and time.monotonic() < deadline:
        time.sleep(0.2)
    engine.close()
    assert engine.snapshot.model_version == v2 and engine.snapshot.galleries["fused"].ntotal == 15
    assert len(engine.search("fused", "sea", k=50)["results"]) == 15


# ---------------------------------------------------------------- level 2: ASGI (to_asgi + test client)


@pytest.fixture(scope="module")
def asgi_client(home):
    from starlette.testclient import TestClient

    os.environ["LYRIC2VEC_HOME"] = str(home[0])
    os.environ["LYRIC2VEC_WATCH_SECONDS"] = "0"
    sys.path.insert(0, str(REPO))
    from bento.service import Lyric2Vec

    with TestClient(Lyric2Vec.to_asgi()) as client:
        yield client


def test_asgi_search_embed_and_errors(asgi_client, home):
    _, version = home
    r = asgi_client.get("/healthz")
    assert r.status_code == 200 and r.json()["model_version"] == version
    r = asgi_client.post("/search", json={"modal": "text", "query": "the sea", "k": 4})
    assert r.status_code == 200, r.text
    check_results(r.json(), 4, version)
    r = asgi_client.post("/embed", json={"texts": ["one", "two words", "three more words"]})
    assert r.status_code == 200, r.text
    vectors = np.array(r.json()["vectors"])
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    r = asgi_client.post("/embed", json={"audio_b64": [b64(wav_bytes(tone(300)))]})
    assert r.status_code == 200 and len(r.json()["vectors"]) == 1
    r = asgi_client.post("/search", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = asgi_client.post("/search", json={"modal": "text", "query": "x", "k": 0})
    assert r.status_code == 400 and r.json()["error"] == "k_out_of_range"
    if not _PROM_PREIMPORTED:
        text = asgi_client.get("/metrics").text
        assert 'lyric2vec_requests_total{modal="text",status="400"}' in text


# ---------------------------------------------------------------- level 3: the real `bentoml serve` process


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    path, version = home
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "bentoml.log"
    proc = start([sys.executable, "-m", "bentoml", "serve", "bento.service:Lyric2Vec", "--host", "127.0.0.1",
                  "--port", str(port)], {"LYRIC2VEC_HOME": str(path), "LYRIC2VEC_WATCH_SECONDS": "0"}, log_path)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc, log_path, 120)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client, version, path, port
    finally:
        stop(proc)
        assert proc.poll() is not None


def metric_values(client, name: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_http_each_modal_returns_k_sorted_results(server):
    client, version, _, _ = server
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and set(health["galleries"]) == {"audio", "lyrics", "fused"}
    audio = b64(wav_bytes(tone(500, seconds=3.0)))
    flac = b64(wav_bytes(tone(500, seconds=3.0, sr=44_100), sr=44_100, fmt="FLAC"))  # resampled on decode
    for body, gallery in [
        ({"modal": "text", "query": "melancholic acoustic ballad with soft vocals", "k": 10}, "audio"),
        ({"modal": "audio", "audio_b64": audio, "k": 10}, "lyrics"),
        ({"modal": "audio", "audio_b64": flac, "k": 10}, "lyrics"),
        ({"modal": "fused", "query": "a chorale about the sea", "k": 10}, "fused"),
        ({"modal": "fused", "query": "the sea", "audio_b64": audio, "k": 10}, "fused"),
        ({"modal": "audio", "audio_b64": audio, "k": 10, "target": "audio"}, "audio"),
    ]:
        r = client.post("/search", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["gallery"] == gallery
        check_results(r.json(), 10, version)
    r = client.post("/search", json={"modal": "text", "query": "x", "k": 1000})
    assert r.status_code == 200 and len(r.json()["results"]) == 40  # k above the gallery size: all of it


def bad_requests() -> list[tuple[str, bytes, int, str]]:
    """(name, raw body, expected status, expected reason)."""

    def j(obj) -> bytes:
        return json.dumps(obj).encode()

    wav = wav_bytes(tone(300))
    too_big = "A" * (4 * ((10 * 1024 * 1024 + 2) // 3) + 4)  # over the 10 MB decoded-audio limit
    long_wav = wav_bytes(tone(300, seconds=70, sr=8000), sr=8000)  # 1.1 MB but 70 s > 60 s
    return [
        ("unknown modal", j({"modal": "video", "query": "x"}), 400, "unknown_modal"),
        ("missing modal", j({"query": "x"}), 400, "missing_modal"),
        ("missing query", j({"modal": "text", "k": 5}), 400, "missing_query"),
        ("empty query", j({"modal": "text", "query": "   "}), 400, "missing_query"),
        ("missing audio", j({"modal": "audio"}), 400, "missing_query"),
        ("k=0", j({"modal": "text", "query": "x", "k": 0}), 400, "k_out_of_range"),
        ("k=5000", j({"modal": "text", "query": "x", "k": 5000}), 400, "k_out_of_range"),
        ("k not a number", j({"modal": "text", "query": "x", "k": "ten"}), 400, "invalid_request"),
        ("unknown target", j({"modal": "text", "query": "x", "target": "video"}), 400, "unknown_target"),
        ("query too long", j({"modal": "text", "query": "la " * 1000}), 413, "query_too_long"),
        ("bad base64", j({"modal": "audio", "audio_b64": "not base64 !!"}), 400, "invalid_base64"),
        ("text file as audio", j({"modal": "audio", "audio_b64": b64(b"just some lyrics\n" * 50)}), 422,
         "undecodable_audio"),
        ("truncated wav", j({"modal": "audio", "audio_b64": b64(wav[:40])}), 422, "undecodable_audio"),
        ("silent wav", j({"modal": "audio", "audio_b64": b64(wav_bytes(np.zeros(SR * 2, np.float32)))}), 422,
         "silent_audio"),
        ("audio too long", j({"modal": "audio", "audio_b64": b64(long_wav)}), 413, "audio_too_long"),
        ("oversized audio", j({"modal": "audio", "audio_b64": too_big}), 413, "audio_too_large"),
        ("body over 16 MB", b'{"modal": "text", "query": "' + b"a" * (17 * 1024 * 1024) + b'"}', 413,
         "body_too_large"),
        ("malformed JSON", b'{"modal": "text", "query": ', 400, "malformed_json"),
        ("JSON array", b"[1, 2]", 400, "malformed_json"),
        ("empty body", b"", 400, "missing_modal"),
        ("embed nothing", None, 400, "missing_query"),
    ]  # fmt: skip


def test_http_bad_requests_get_4xx_json_and_service_keeps_serving(server):
    client, version, _, _ = server
    before = metric_values(client, "lyric2vec_requests_total")
    errors_before = metric_values(client, "lyric2vec_errors_total")
    good = {"modal": "text", "query": "a hymn", "k": 3}
    cases = bad_requests()
    for name, body, status, reason in cases:
        path = "/embed" if body is None else "/search"
        r = client.post(path, content=body or b"{}", headers={"content-type": "application/json"})
        assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
        payload = r.json()
        assert payload["error"] == reason, f"{name}: {payload}"
        assert payload["detail"], name
        ok = client.post("/search", json=good)
        assert ok.status_code == 200 and len(ok.json()["results"]) == 3, f"after {name}: {ok.text[:300]}"

    after = metric_values(client, "lyric2vec_requests_total")

    def delta(pred) -> float:
        return sum(v - before.get(key, 0.0) for key, v in after.items() if pred(dict(key)))

    n_search_bad = sum(1 for c in cases if c[1] is not None)
    assert delta(lambda lab: lab["status"].startswith("4")) == len(cases)
    assert delta(lambda lab: lab["modal"] == "text" and lab["status"] == "200") == len(cases)
    assert delta(lambda lab: lab["status"] == "422") == sum(1 for c in cases if c[2] == 422)
    assert delta(lambda lab: lab["status"] == "413") == sum(1 for c in cases if c[2] == 413)
    assert delta(lambda lab: lab["modal"] == "audio" and lab["status"] != "200") >= 7
    assert n_search_bad == len(cases) - 1
    errors = metric_values(client, "lyric2vec_errors_total")
    for reason in {c[3] for c in cases}:
        expected = sum(1 for c in cases if c[3] == reason)
        got = errors.get((("reason", reason),), 0) - errors_before.get((("reason", reason),), 0)
        assert got == expected, f"errors_total{{reason={reason}}} went up by {got}, expected {expected}"


def test_http_metrics_exported_with_interface_names(server):
    client, _, _, _ = server
    client.post("/search", json={"modal": "audio", "audio_b64": b64(wav_bytes(tone(330))), "k": 2})
    text = client.get("/metrics").text
    for name in METRIC_NAMES:
        assert f"\n{name}" in text, f"{name} missing from /metrics"
    assert metric_values(client, "lyric2vec_index_vectors")[(("gallery", "audio"),)] == 40
    assert metric_values(client, "lyric2vec_faiss_search_seconds_count")[(("gallery", "lyrics"),)] >= 1
    assert metric_values(client, "lyric2vec_encode_seconds_count")[(("modal", "audio"),)] >= 1


def test_grafana_queries_name_only_metrics_the_live_service_exports(server):
    from test_deployments import DASHBOARD_FILE, live_exposed_series, unknown_metric_problems

    client = server[0]
    client.post("/search", json={"modal": "text", "query": "fill every family", "k": 1})
    client.post("/search", json={"modal": "smell", "query": "x", "k": 1})  # multiprocess metrics list a
    # labelled family only once it has a sample: one error makes lyric2vec_errors_total appear
    live = live_exposed_series(client.get("/metrics").text)
    assert "lyric2vec_request_seconds_bucket" in live
    assert unknown_metric_problems(json.loads(DASHBOARD_FILE.read_text()), live) == []


def test_real_prometheus_scrapes_the_service(server, tmp_path):
    client, _, _, port = server
    client.post("/search", json={"modal": "text", "query": "scrape me", "k": 1})
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: lyric2vec\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prom = subprocess.Popen(
        ["/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        result = []
        while time.monotonic() < deadline and not result:
            time.sleep(1)
            try:
                r = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query",
                              params={"query": "lyric2vec_requests_total"}, timeout=2)  # fmt: skip
                result = r.json()["data"]["result"] if r.status_code == 200 else []
            except httpx.HTTPError:
                pass
        assert result, "Prometheus never returned lyric2vec_requests_total"
        assert {"modal", "status", "job"} <= set(result[0]["metric"])
        assert any(float(s["value"][1]) >= 1 for s in result)
        up = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": "up"}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        stop(prom)


def test_http_reload_swaps_index_without_dropping_requests(server):
    client, old_version, home_path, _ = server
    stats = {"ok": 0, "errors": [], "versions": set()}
    stop_flag = threading.Event()

    def hammer():
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            while not stop_flag.is_set():
                try:
                    r = c.post("/search", json={"modal": "text", "query": "river song", "k": 5})
                    if r.status_code == 200 and len(r.json()["results"]) == 5:
                        stats["ok"] += 1
                        stats["versions"].add(r.json()["model_version"])
                    else:
                        stats["errors"].append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    stats["errors"].append(repr(exc))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.5)
        new_version = build_home(
            home_path, n_tracks=60, seed=1
        )  # new weights + new indexes, written atomically
        assert new_version != old_version
        r = client.post("/reload", json={})
        assert r.status_code == 200, r.text
        assert r.json()["swapped"] and r.json()["model_version"] == new_version
        time.sleep(0.5)
        health = client.get("/healthz").json()
        assert health["model_version"] == new_version and health["galleries"]["audio"]["ntotal"] == 60

        # a broken index is refused with the file named, and the loaded one keeps serving
        index_file = home_path / "indexes" / "audio" / "index.faiss"
        index_file.write_bytes(index_file.read_bytes()[:100])
        r = client.post("/reload", json={})
        assert r.status_code == 409 and r.json()["error"] == "reload_failed"
        assert "index.faiss" in r.json()["detail"]
        time.sleep(0.3)
    finally:
        stop_flag.set()
        thread.join(timeout=30)
    assert not stats["errors"], stats["errors"][:5]
    assert stats["ok"] > 10 and stats["versions"] == {old_version, new_version}
    r = client.post("/search", json={"modal": "text", "query": "river", "k": 60})
    assert (
        r.status_code == 200 and r.json()["model_version"] == new_version and len(r.json()["results"]) == 60
    )
    assert metric_values(client, "lyric2vec_index_vectors")[(("gallery", "audio"),)] == 60
