"""Serving load test: latency percentiles and QPS of the real `bentoml serve` process, per modal and gallery size.

    python bench/serve.py                                   # songbook size, 100k and 1M vectors (~10 min, 2 cores)
    python bench/serve.py --gallery-size songbook 100000 --duration 10 --clients 4
    python bench/serve.py --url http://127.0.0.1:8080 --gallery-size existing   # a service already running

For each gallery size it builds a LYRIC2VEC_HOME (a model of --preset, randomly initialised unless
--model-dir names a trained one: the cost of a forward pass does not depend on the weights), starts
`bentoml serve` on 127.0.0.1 on a free port, and drives it with N keep-alive clients (threads, stdlib
http.client) for a fixed time per modal: text queries, 10-s audio clips, fused text + 10-s audio. Reports
p50/p95/p99 and QPS, errors, the server's resident memory (all its processes) before and after, the
exact-search floor (the same encoded queries through FAISS alone: the served index and brute force), and
the highest QPS whose p99 stays under --p99-budget-ms while the number of clients is stepped up.
Galleries above the songbook size are synthetic clustered vectors (benchmarks only, never quality).
Results: bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "serve.json"
SONGBOOK_TRACKS = 431  # size of the embedded songbook catalogue
TEXT_QUERIES = [
    "melancholic acoustic ballad with soft vocals",
    "a slow German chorale in a minor key, organ",
    "a love song about the sea and the moon",
    "Latin hymn of praise for four voices",
    "a cheerful English folk song with a refrain",
    "Italian madrigal about lost love",
    "Christ lag in Todesbanden",
    "ein feste Burg ist unser Gott",
]


# ---------------------------------------------------------------- the artifacts home


def make_model(work: Path, preset_name: str, model_dir: str | None) -> Path:
    if model_dir:
        return Path(model_dir).resolve()
    from lyric2vec_models.config import preset
    from lyric2vec_models.train import build_model, save_model

    out = work / "models" / f"random-{preset_name}"
    if not (out / "manifest.json").is_file():
        cfg = preset(preset_name)
        artists, genres = [f"artist{i}" for i in range(40)], [f"genre{i}" for i in range(8)]
        save_model(
            build_model(cfg, len(artists), len(genres)), cfg, out, artist_vocab=artists, genre_vocab=genres
        )
    return out


def tone_mix(seconds: float, seed: int, sr: int = 22_050) -> np.ndarray:
    """A few harmonics with vibrato and noise: audio that is neither silent nor trivial to decode."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 * 2 ** rng.uniform(0, 3)
    wave = sum(np.sin(2 * np.pi * f0 * h * t + 0.3 * np.sin(2 * np.pi * 5 * t)) / h for h in range(1, 5))
    wave = wave + 0.02 * rng.standard_normal(len(t))
    return (0.2 * wave / np.abs(wave).max()).astype(np.float32)


def wav_bytes(wave: np.ndarray, sr: int = 22_050) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def build_home(work: Path, size: int | str, model_dir: Path) -> Path:
    """home/<size>/ with models/current -> model_dir and the three galleries (shared dir for synthetic)."""
    from lyric2vec_models.index import build_gallery, save_gallery, synthetic_gallery
    from lyric2vec_models.inference import Lyric2VecEncoder

    home = work / f"home-{size}"
    (home / "models").mkdir(parents=True, exist_ok=True)
    current = home / "models" / "current"
    if current.is_symlink() or current.exists():
        current.unlink()
    current.symlink_to(model_dir)
    enc = Lyric2VecEncoder.load(model_dir)
    indexes = home / "indexes"
    stamp = indexes / ".built"
    if stamp.is_file() and stamp.read_text() == enc.model_version:
        return home
    t0 = time.perf_counter()
    if size == "songbook":  # the catalogue's size, encoded by the model itself (as the pipeline would)
        import pyarrow as pa

        n = SONGBOOK_TRACKS
        ids = [f"songbook-{i:04d}" for i in range(n)]
        artists, genres = [f"artist{i % 40}" for i in range(n)], [f"genre{i % 8}" for i in range(n)]
        z_text = enc.encode_text([f"{TEXT_QUERIES[i % 8]} verse {i}" for i in range(n)])
        z_audio = np.stack([enc.encode_audio(tone_mix(3.0, seed=i)) for i in range(n)])
        z_fused, _ = enc.fuse(z_text, z_audio, enc.encode_meta(artists, genres))
        tracks = pa.table({"track_id": ids, "title": [f"Song {i}" for i in range(n)], "artist": artists,
                           "genre": genres})  # fmt: skip
        for name, z in {"audio": z_audio, "lyrics": z_text, "fused": z_fused}.items():
            save_gallery(
                build_gallery(ids, z, enc.model_version, tracks=tracks), indexes / name, gallery=name
            )
    else:  # synthetic vectors: one index directory, linked as all three galleries
        ids, x = synthetic_gallery(int(size), enc.dim, seed=0)
        gallery = build_gallery(ids, x, enc.model_version)
        save_gallery(gallery, indexes / "synthetic", gallery="synthetic", synthetic=True)
        for name in ("audio", "lyrics", "fused"):
            link = indexes / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("synthetic")
    stamp.write_text(enc.model_version)
    print(f"  built {size} home in {time.perf_counter() - t0:.1f} s", flush=True)
    return home


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    home: Path, workers: int, threads: int, compile_text: bool = True
) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = home / "bentoml.log"
    env = {**os.environ, "LYRIC2VEC_HOME": str(home), "LYRIC2VEC_WATCH_SECONDS": "0",
           "LYRIC2VEC_COMPILE_TEXT": "1" if compile_text else "0",
           "LYRIC2VEC_WORKERS": str(workers), "LYRIC2VEC_THREADS": str(threads), "BENTOML_DO_NOT_TRACK": "True"}  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "bento.service:Lyric2Vec",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited ({proc.returncode}); see {log}")
        try:
            status, _ = request("127.0.0.1", port, "GET", "/healthz", None)
            if status == 200:
                return proc, port, log
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"no /healthz after 600 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def server_rss_mb(pid: int | None) -> float | None:
    """Resident memory of the server and all its children (BentoML runs workers as child processes)."""
    if pid is None:
        return None
    try:
        import psutil

        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except ImportError:
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        return total / 1024


# ---------------------------------------------------------------- load generation


def request(host: str, port: int, method: str, path: str, body: bytes | None, conn=None):
    c = conn or http.client.HTTPConnection(host, port, timeout=60)
    headers = {"content-type": "application/json"} if body is not None else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, data


def make_bodies(modal: str, k: int) -> list[bytes]:
    clips = [base64.b64encode(wav_bytes(tone_mix(10.0, seed=1000 + i))).decode() for i in range(4)]
    if modal == "text":
        return [json.dumps({"modal": "text", "query": q, "k": k}).encode() for q in TEXT_QUERIES]
    if modal == "audio":
        return [json.dumps({"modal": "audio", "audio_b64": c, "k": k}).encode() for c in clips]
    return [json.dumps({"modal": "fused", "query": q, "audio_b64": clips[i % 4], "k": k}).encode()
            for i, q in enumerate(TEXT_QUERIES[:4])]  # fmt: skip


def run_load(host: str, port: int, bodies: list[bytes], clients: int, duration: float, warmup: float) -> dict:
    """`clients` closed-loop clients for warmup + duration seconds; stats over the timed part only."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup, t_start + warmup + duration

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        n = i
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            try:
                status, data = request(host, port, "POST", "/search", bodies[n % len(bodies)], conn)
                ok = status == 200
            except (OSError, http.client.HTTPException) as exc:
                ok, data = False, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
            t1 = time.perf_counter()
            if t0 >= t_measure:
                if ok:
                    lat[i].append(t1 - t0)
                else:
                    errors.append(data[:200].decode("utf-8", "replace"))
            n += clients
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_lat = np.array([x for per in lat for x in per]) * 1e3
    out = {"clients": clients, "duration_s": duration, "requests": int(len(all_lat)), "errors": len(errors),
           "qps": round(len(all_lat) / duration, 1)}  # fmt: skip
    if len(all_lat):
        for q in (50, 95, 99):
            out[f"p{q}_ms"] = round(float(np.percentile(all_lat, q)), 2)
        out["max_ms"] = round(float(all_lat.max()), 2)
    if errors:
        out["error_samples"] = errors[:3]
    return out


def faiss_floor(home: Path, modal: str, bodies: list[bytes], k: int, repeats: int = 200) -> dict:
    """The same queries, encoded once in-process, through FAISS alone: the served index and brute force."""
    from lyric2vec_models.index import load_gallery
    from lyric2vec_models.inference import Lyric2VecEncoder
    from lyric2vec_models.serving import DEFAULT_TARGET, Limits, decode_audio_b64

    enc = Lyric2VecEncoder.load(home / "models" / "current")
    gallery = load_gallery(home / "indexes" / DEFAULT_TARGET[modal])
    qs = []
    for body in bodies:
        b = json.loads(body)
        wave = decode_audio_b64(b["audio_b64"], enc.spec.sample_rate, Limits()) if "audio_b64" in b else None
        zt = enc.encode_text([b["query"]]) if "query" in b else None
        za = enc.encode_audio(wave)[None] if wave is not None else None
        qs.append(zt if modal == "text" else za if modal == "audio" else enc.fuse(zt, za, None)[0])
    queries = np.concatenate(qs)

    def timed(fn) -> dict:
        t = []
        for i in range(repeats):
            t0 = time.perf_counter()
            fn(queries[i % len(queries)][None])
            t.append(time.perf_counter() - t0)
        t = np.array(t) * 1e3
        return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3),
                "qps_1thread": round(1e3 / t.mean(), 1)}  # fmt: skip

    out = {
        "index_type": gallery.index_type,
        "ntotal": gallery.ntotal,
        "served_index": timed(lambda q: gallery.search(q, k)),
    }
    if gallery.index_type == "flat":
        out["exact"] = out["served_index"]
    else:
        import faiss

        flat = faiss.IndexFlatIP(gallery.dim)
        flat.add(gallery.vectors())
        out["exact"] = timed(lambda q: flat.search(q, k))
        out["recall_at_k_vs_exact"] = recall(
            flat, gallery.index, queries, k
        )  # these queries: far from synthetic
        rng = np.random.default_rng(0)  # in-distribution queries: perturbed gallery members
        near = gallery.vectors()[rng.choice(gallery.ntotal, 200, replace=False)]
        near = near + rng.standard_normal(near.shape).astype(np.float32) * (0.1 / np.sqrt(gallery.dim))
        near /= np.linalg.norm(near, axis=1, keepdims=True)
        out["recall_at_k_in_distribution"] = recall(flat, gallery.index, near, k)
    return out


def recall(exact_index, approx_index, queries: np.ndarray, k: int) -> float:
    _, truth = exact_index.search(queries, k)
    _, found = approx_index.search(queries, k)
    return round(float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)])), 4)


def soak(host: str, port: int, pid: int | None, bodies: list[bytes], clients: int, seconds: float,
         every: float = 15.0) -> dict:
    """Continuous mixed load for `seconds`, resident memory sampled every `every` s: is it flat?"""
    samples: list[dict] = []
    result: dict = {}
    loader = threading.Thread(target=lambda: result.update(run_load(host, port, bodies, clients, seconds, 0.0)))
    t0 = time.perf_counter()
    loader.start()
    while loader.is_alive():
        samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(server_rss_mb(pid) or 0, 1)})
        loader.join(timeout=every)
    samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(server_rss_mb(pid) or 0, 1)})
    rss = [x["rss_mb"] for x in samples]
    half = len(rss) // 2
    return {**result, "rss_samples": samples, "rss_first_half_max_mb": max(rss[: max(half, 1)]),
            "rss_second_half_max_mb": max(rss[half:]), "rss_growth_second_half_mb": round(max(rss[half:]) - rss[half], 1)}  # fmt: skip


def max_qps_under_budget(host, port, bodies, budget_ms, duration, warmup, max_clients) -> dict:
    steps, best = [], None
    clients = 1
    while clients <= max_clients:
        r = run_load(host, port, bodies, clients, duration, warmup)
        steps.append({k: r.get(k) for k in ("clients", "qps", "p50_ms", "p99_ms", "errors")})
        print(
            f"    step clients={clients:3d}  qps={r['qps']:7.1f}  p99={r.get('p99_ms', float('nan')):8.2f} ms",
            flush=True,
        )
        if r.get("p99_ms", 1e9) < budget_ms and r["errors"] == 0:
            if best is None or r["qps"] > best["qps"]:
                best = steps[-1]
        elif best is not None:
            break  # past the knee
        clients *= 2
    return {"budget_p99_ms": budget_ms, "best": best, "steps": steps}


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery-size", nargs="+", default=["songbook", "100000", "1000000"],
                    help="'songbook' (431 tracks encoded by the model), an integer (synthetic vectors), or 'existing'")  # fmt: skip
    ap.add_argument("--modal", nargs="+", default=["text", "audio", "fused"])
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients for the per-modal figures")
    ap.add_argument("--duration", type=float, default=10.0, help="timed seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each run")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--p99-budget-ms", type=float, default=120.0)
    ap.add_argument("--max-clients", type=int, default=32, help="upper end of the client stepping")
    ap.add_argument("--step-modal", nargs="*", default=["text", "audio"], help="modals to step clients for")
    ap.add_argument("--preset", default="small", help="model preset when no --model-dir (random init)")
    ap.add_argument("--model-dir", default=None, help="a trained model directory to serve")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--no-compile-text", dest="compile_text", action="store_false",
                    help="serve the text tower eagerly (default: compiled, as `make api` serves it)")  # fmt: skip
    ap.add_argument("--soak-seconds", type=float, default=0.0,
                    help="after the runs: mixed text+audio load this long, memory sampled every 15 s")  # fmt: skip
    ap.add_argument("--url", default=None, help="benchmark this running service instead (no start, no floor)")
    ap.add_argument("--server-pid", type=int, default=None, help="with --url: its PID, for memory figures")
    ap.add_argument(
        "--work-dir", default="/tmp/lyric2vec-bench", help="homes and models (reused across runs)"
    )
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
              "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup, "k": args.k,
              "workers": args.workers, "threads": args.threads, "compile_text": args.compile_text, "runs": []}  # fmt: skip
    model_dir = None if args.url else make_model(work, args.preset, args.model_dir)
    report["model"] = str(args.model_dir or f"random-init {args.preset} preset")
    for size in args.gallery_size:
        print(f"gallery {size}", flush=True)
        proc, home = None, None
        if args.url:
            from urllib.parse import urlparse

            u = urlparse(args.url)
            host, port, pid = u.hostname, u.port or 80, args.server_pid
        else:
            home = build_home(work, size, model_dir)
            t0 = time.perf_counter()
            proc, port, _ = start_server(home, args.workers, args.threads, args.compile_text)
            host, pid = "127.0.0.1", proc.pid
            print(f"  server up in {time.perf_counter() - t0:.1f} s", flush=True)
        try:
            health = json.loads(request(host, port, "GET", "/healthz", None)[1])
            for modal in args.modal:  # warm every code path once, so "before" memory is the steady state
                run_load(host, port, make_bodies(modal, args.k), 2, 1.0, 0.5)
            run = {"gallery_size": size, "ntotal": {g: v["ntotal"] for g, v in health["galleries"].items()},
                   "index_type": {g: v["index_type"] for g, v in health["galleries"].items()},
                   "model_version": health["model_version"], "rss_mb_before": server_rss_mb(pid),  # after a warm-up
                   "loadavg_before": os.getloadavg(), "modals": {}}  # fmt: skip
            for modal in args.modal:
                bodies = make_bodies(modal, args.k)
                r = run_load(host, port, bodies, args.clients, args.duration, args.warmup)
                print(f"  {modal:6s} clients={args.clients} qps={r['qps']:7.1f} p50={r.get('p50_ms')} "
                      f"p95={r.get('p95_ms')} p99={r.get('p99_ms')} ms errors={r['errors']}", flush=True)  # fmt: skip
                if home is not None:
                    r["faiss_floor"] = faiss_floor(home, modal, bodies, args.k)
                if modal in args.step_modal:
                    r["max_qps_under_budget"] = max_qps_under_budget(
                        host, port, bodies, args.p99_budget_ms, min(args.duration, 6.0), 1.0, args.max_clients
                    )
                run["modals"][modal] = r
            run["rss_mb_after"] = server_rss_mb(pid)
            if args.soak_seconds > 0:
                mixed = [b for pair in zip(make_bodies("text", args.k), make_bodies("audio", args.k) * 2, strict=True)
                         for b in pair]  # fmt: skip
                run["soak"] = soak(host, port, pid, mixed, args.clients, args.soak_seconds)
                sk = run["soak"]
                print(f"  soak {args.soak_seconds:.0f} s mixed: {sk['requests']} requests, errors={sk['errors']}, "
                      f"p99={sk.get('p99_ms')} ms, RSS {sk['rss_samples'][0]['rss_mb']:.0f} -> "
                      f"{sk['rss_samples'][-1]['rss_mb']:.0f} MB (second half grew {sk['rss_growth_second_half_mb']} MB)",
                      flush=True)  # fmt: skip
            run["loadavg_after"] = (
                os.getloadavg()
            )  # other jobs on the box share the cores: read figures with this
            report["runs"].append(run)
        finally:
            if proc is not None:
                stop_server(proc)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")


def print_table(report: dict) -> None:
    print(f"\n{'gallery':>9} {'modal':6} {'cl':>3} {'QPS':>7} {'p50':>7} {'p95':>7} {'p99':>7} {'err':>4} "
          f"{'faiss p50':>9} {'exact p50':>9} {'QPS@p99<budget':>15} {'RSS before->after MB':>21}")  # fmt: skip
    for run in report["runs"]:
        for modal, r in run["modals"].items():
            floor = r.get("faiss_floor", {})
            best = (r.get("max_qps_under_budget") or {}).get("best") or {}
            print(f"{run['gallery_size']:>9} {modal:6} {r['clients']:>3} {r['qps']:>7.1f} {r.get('p50_ms', 0):>7.2f} "
                  f"{r.get('p95_ms', 0):>7.2f} {r.get('p99_ms', 0):>7.2f} {r['errors']:>4} "
                  f"{floor.get('served_index', {}).get('p50_ms', float('nan')):>9.3f} "
                  f"{floor.get('exact', {}).get('p50_ms', float('nan')):>9.3f} "
                  f"{(str(best.get('qps')) + ' @' + str(best.get('clients'))) if best else '-':>15} "
                  f"{run['rss_mb_before'] or 0:>9.0f} -> {run['rss_mb_after'] or 0:>6.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
