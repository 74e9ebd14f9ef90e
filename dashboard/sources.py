"""What the dashboard reads, without Streamlit: artifacts under LYRIC2VEC_HOME and the search API over HTTP.

Every reader returns data or raises `Unavailable` with a message a person can act on (the missing path
or URL and the make target that creates it); app.py shows that message instead of a traceback.
The dashboard depends on the artifacts and the HTTP API only, never on lyric2vec_models.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import polars as pl

PROJECTION = Path("umap", "projection.parquet")
EVAL_REPORT = Path("eval_report.json")
RECALL_KEY = re.compile(r"^(recall|r)@(\d+)$", re.IGNORECASE)
METRIC_KEYS = ("mrr", "median_rank")
LABEL_KEYS = ("variant", "ablation", "name", "pair", "direction", "task")  # labels of rows given as a list


class Unavailable(RuntimeError):
    """An artifact or the API is missing or unusable; the message says where and what to run."""


@dataclass(frozen=True)
class Settings:
    home: Path  # LYRIC2VEC_HOME, resolved
    api_url: str  # base URL of the BentoML service, no trailing slash

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("LYRIC2VEC_HOME", "artifacts")).resolve()
        url = os.environ.get("LYRIC2VEC_API_URL", "http://127.0.0.1:8080").rstrip("/")
        return cls(home=home, api_url=url)


def mtime(path: Path) -> float:
    """A cache key that changes when the file is replaced (artifacts are swapped in by rename)."""
    try:
        return path.stat().st_mtime_ns / 1e9
    except FileNotFoundError:
        return -1.0


# ---------------------------------------------------------------- UMAP projection


def load_projection(home: Path) -> pl.DataFrame:
    path = home / PROJECTION
    if not path.is_file():
        raise Unavailable(
            f"No UMAP projection at `{path}`. Create it with `make pipeline` "
            "(materializes embeddings and umap_projection), or materialize umap_projection in the Dagster UI."
        )
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises ComputeError / OSError / ArrowError on a bad file
        raise Unavailable(
            f"`{path}` is not a readable parquet file ({exc}); re-materialize umap_projection."
        ) from None
    missing = {"x", "y"} - set(df.columns)
    if missing:
        raise Unavailable(
            f"`{path}` lacks columns {sorted(missing)}; re-materialize umap_projection."
        ) from None
    for col in ("track_id", "title", "artist", "genre", "language", "split"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, pl.Utf8).alias(col))
    return df


# ---------------------------------------------------------------- eval report


def load_eval_report(home: Path) -> dict:
    path = home / EVAL_REPORT
    if not path.is_file():
        raise Unavailable(
            f"No evaluation report at `{path}`. Create it with `make eval` (or `make pipeline`, "
            "which trains and evaluates)."
        )
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Unavailable(f"`{path}` is not valid JSON ({exc}); re-materialize eval_report.") from None
    if not isinstance(report, dict):
        raise Unavailable(f"`{path}` holds a {type(report).__name__}, expected a JSON object.")
    return report


def _number(v) -> float | None:
    if isinstance(v, dict) and "mean" in v:  # seed summaries: {"mean": .., "std": ..}
        v = v["mean"]
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _is_metric_dict(d) -> bool:
    return isinstance(d, dict) and any(RECALL_KEY.match(str(k)) or k in (*METRIC_KEYS, "skipped") for k in d)


def _metric_row(path: tuple[str, ...], d: dict) -> dict:
    row: dict = {"path": path}
    for k, v in d.items():
        m = RECALL_KEY.match(str(k))
        if m and _number(v) is not None:
            row[f"recall@{int(m.group(2))}"] = _number(v)
        elif k in (*METRIC_KEYS, "n_queries", "gallery_size") and _number(v) is not None:
            row[k] = _number(v)
    baseline = d.get("random") or d.get("random_baseline") or d.get("baseline")
    if isinstance(baseline, dict):
        for k, v in baseline.items():
            m = RECALL_KEY.match(str(k))
            if m and _number(v) is not None:
                row[f"random recall@{int(m.group(2))}"] = _number(v)
    elif _number(d.get("random_recall@10")) is not None:
        row["random recall@10"] = _number(d["random_recall@10"])
    if isinstance(d.get("contains_query"), bool):
        row["contains_query"] = d["contains_query"]
    if d.get("skipped"):
        row["note"] = f"skipped: {d['skipped']}"
    return row


def metric_rows(report, path: tuple[str, ...] = ()) -> list[dict]:
    """Every block of retrieval metrics under `report`, wherever it sits, with the keys that lead to it.

    Reads any nesting ({name: metrics}, {variant: {pair: metrics}}, or lists of rows labelled by
    "variant"/"pair" fields); blocks named "random" are baselines of their parent, not rows.
    """
    rows: list[dict] = []
    if _is_metric_dict(report):
        labels = tuple(str(report[k]) for k in LABEL_KEYS if isinstance(report.get(k), str))
        rows.append(_metric_row(path + labels, report))
        return rows
    if isinstance(report, dict):
        for k, v in report.items():
            if str(k).lower() not in ("random", "random_baseline", "baseline") and isinstance(v, dict | list):
                rows += metric_rows(v, path + (str(k),))
    elif isinstance(report, list):
        for i, v in enumerate(report):
            if isinstance(v, dict | list):
                labelled = isinstance(v, dict) and any(isinstance(v.get(k), str) for k in LABEL_KEYS)
                rows += metric_rows(v, path if labelled else path + (str(i),))
    return rows


def report_scalars(report: dict) -> dict:
    """Top-level plain values (model version, test size, split seed, goal) for a caption."""
    return {
        k: v
        for k, v in report.items()
        if isinstance(v, str | int | bool) or (isinstance(v, float) and k != "seconds")
    }


@dataclass
class EvalTables:
    directions: list[dict]  # one row per query -> gallery direction: "direction" + metrics
    ablations: list[dict]  # "query", "view" (gallery representation) + metrics (+ contains_query)
    seed_summary: list[dict]  # mean over split seeds, when the report has one
    other: list[dict]  # metric blocks found elsewhere (reports of another shape)


KNOWN_SECTIONS = ("directions", "ablations", "seed_summary", "seed_runs", "definitions", "trained")


def eval_tables(report: dict) -> EvalTables:
    """Tables from eval_report.json as lyric2vec_pipeline/assets/learning.py writes it
    ({"directions": {"lyrics->audio": metrics}, "ablations": {"lyrics->text-only": metrics}, ...}),
    falling back to every metric block found for any other shape."""
    directions = [{"direction": " / ".join(r["path"]) or "(overall)", **_values(r)}
                  for r in metric_rows(report.get("directions", {}))]  # fmt: skip
    ablations = []
    for r in metric_rows(report.get("ablations", {})):
        path = list(r["path"])
        if len(path) == 1 and "->" in path[0]:
            query, view = path[0].split("->", 1)
        else:  # {view: {query: metrics}} or a flat {view: metrics}
            view, query = (path[0] if path else "(overall)"), " / ".join(path[1:])
        ablations.append({"query": query, "view": view, **_values(r)})
    seeds = [
        {"direction": " / ".join(r["path"]), **_values(r)}
        for r in metric_rows(report.get("seed_summary", {}))
    ]
    rest = {k: v for k, v in report.items() if k not in KNOWN_SECTIONS}
    other = [{"where": " / ".join(r["path"]) or "(overall)", **_values(r)} for r in metric_rows(rest)]
    return EvalTables(directions, ablations, seeds, other)


def _values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "path"}


def metric_column_order(columns: list[str]) -> list[str]:
    """Labels first, then sizes, recall@k by k, mrr, median rank, the random baselines, the rest."""

    def key(c: str) -> tuple:
        m = RECALL_KEY.match(c.removeprefix("random "))
        if m:
            return (3 if c.startswith("random ") else 1, int(m.group(2)), c)
        fixed = {"n_queries": (0, 1), "gallery_size": (0, 2), "mrr": (2, 0), "median_rank": (2, 1)}
        return (
            (*fixed[c], c)
            if c in fixed
            else (-1 if c in ("direction", "query", "view", "where") else 4, 0, c)
        )

    return sorted(columns, key=key)


VIEW_ORDER = ("text", "lyrics", "audio", "meta", "fused", "full")


def view_sort_key(name: str) -> tuple[int, str]:
    low = name.lower()
    return next((i for i, v in enumerate(VIEW_ORDER) if low.startswith(v)), len(VIEW_ORDER)), low


# ---------------------------------------------------------------- the search API


@dataclass
class SearchOutcome:
    ok: bool
    status: int  # HTTP status, 0 when the API could not be reached
    body: dict = field(default_factory=dict)
    error: str = ""  # what went wrong, for a person
    seconds: float = 0.0  # round trip as the dashboard saw it


def api_unreachable(url: str, exc: Exception) -> str:
    return (
        f"The search API is not reachable at `{url}` ({type(exc).__name__}: {exc}). Start it with `make api` "
        "(`bentoml serve bento.service:Lyric2Vec --port 8080`) or set LYRIC2VEC_API_URL."
    )


def health(api_url: str, timeout: float = 3.0) -> dict:
    try:
        r = httpx.get(f"{api_url}/healthz", timeout=timeout)
    except httpx.HTTPError as exc:
        raise Unavailable(api_unreachable(api_url, exc)) from None
    if r.status_code != 200:
        raise Unavailable(f"`{api_url}/healthz` answered {r.status_code}: {r.text[:300]}")
    try:
        return r.json()
    except ValueError:
        raise Unavailable(f"`{api_url}/healthz` did not return JSON: {r.text[:200]}") from None


def choose_modal(modal: str, query: str, audio: bytes | None) -> str:
    """ "auto": fused when both a text and a clip are given, else whichever one is."""
    if modal != "auto":
        return modal
    if query.strip() and audio:
        return "fused"
    return "audio" if audio else "text"


def search(
    api_url: str, modal: str, query: str = "", audio: bytes | None = None, k: int = 10,
    target: str | None = None, timeout: float = 60.0,
) -> SearchOutcome:  # fmt: skip
    body: dict = {"modal": modal, "k": int(k)}
    if query.strip():
        body["query"] = query.strip()
    if audio:
        body["audio_b64"] = base64.b64encode(audio).decode()
    if target:
        body["target"] = target
    t0 = time.perf_counter()
    try:
        r = httpx.post(f"{api_url}/search", json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        return SearchOutcome(False, 0, error=api_unreachable(api_url, exc))
    seconds = time.perf_counter() - t0
    try:
        payload = r.json()
    except ValueError:
        payload = {}
    if r.status_code != 200:
        reason = payload.get("error", "error") if isinstance(payload, dict) else "error"
        detail = payload.get("detail", r.text[:300]) if isinstance(payload, dict) else r.text[:300]
        return SearchOutcome(False, r.status_code, payload, f"{r.status_code} {reason}: {detail}", seconds)
    return SearchOutcome(True, 200, payload, seconds=seconds)


# ---------------------------------------------------------------- service metrics (Prometheus text)


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound (le) -> cumulative count
    count: float = 0.0
    total: float = 0.0  # sum of observed seconds

    def add(self, other: Histogram) -> None:
        for le, c in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + c
        self.count += other.count
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q * count."""
        if self.count <= 0 or not self.buckets:
            return None
        bounds = sorted(self.buckets)
        rank = q * self.buckets[bounds[-1]]
        lower, below = 0.0, 0.0
        for le in bounds:
            cum = self.buckets[le]
            if cum >= rank:
                if math.isinf(le):  # beyond the last finite bucket: its bound is the best estimate
                    return lower
                if cum == below:
                    return le
                return lower + (le - lower) * (rank - below) / (cum - below)
            lower, below = le, cum
        return lower


@dataclass
class Scrape:
    at: float  # time.monotonic() of the scrape
    histograms: dict[str, dict[tuple, Histogram]]  # metric -> labels without le (sorted tuple) -> histogram
    counters: dict[str, dict[tuple, float]]  # sample name -> labels -> value (counters and gauges)


def parse_metrics(text: str, at: float | None = None) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    histograms: dict[str, dict[tuple, Histogram]] = {}
    counters: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("lyric2vec_"):
            continue
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if family.type == "histogram":
                h = histograms.setdefault(family.name, {}).setdefault(labels, Histogram())
                if s.name.endswith("_bucket"):
                    h.buckets[float(s.labels["le"])] = s.value
                elif s.name.endswith("_count"):
                    h.count = s.value
                elif s.name.endswith("_sum"):
                    h.total = s.value
            else:
                counters.setdefault(s.name, {})[labels] = s.value
    return Scrape(at=time.monotonic() if at is None else at, histograms=histograms, counters=counters)


def scrape(api_url: str, timeout: float = 3.0) -> Scrape:
    try:
        r = httpx.get(f"{api_url}/metrics", timeout=timeout)
    except httpx.HTTPError as exc:
        raise Unavailable(api_unreachable(api_url, exc)) from None
    if r.status_code != 200:
        raise Unavailable(f"`{api_url}/metrics` answered {r.status_code}; is this the Lyric2Vec service?")
    return parse_metrics(r.text)


def by_label(series: dict[tuple, Histogram], label: str) -> dict[str, Histogram]:
    """Histograms summed over every label but `label` (e.g. request latency per modal over all statuses)."""
    out: dict[str, Histogram] = {}
    for labels, h in series.items():
        key = dict(labels).get(label, "")
        out.setdefault(key, Histogram()).add(h)
    return out


def latency_table(now: Scrape, before: Scrape | None) -> list[dict]:
    """One row per modal: requests, errors, p50/p99/mean latency (ms, since service start), requests/s."""
    requests = by_label(now.histograms.get("lyric2vec_request_seconds", {}), "modal")
    totals = now.counters.get("lyric2vec_requests_total", {})
    old = before.counters.get("lyric2vec_requests_total", {}) if before else {}
    dt = (now.at - before.at) if before else 0.0
    modals = sorted(set(requests) | {dict(k).get("modal", "") for k in totals})
    rows = []
    for modal in modals:
        keys = [k for k in totals if dict(k).get("modal") == modal]
        n = sum(totals[k] for k in keys)
        errors = sum(totals[k] for k in keys if not dict(k).get("status", "200").startswith("2"))
        h = requests.get(modal, Histogram())
        p50, p99 = h.quantile(0.5), h.quantile(0.99)
        rate = (n - sum(old.get(k, 0.0) for k in keys)) / dt if dt > 0 else None
        rows.append({
            "modal": modal, "requests": int(n), "errors": int(errors), "req/s": rate,
            "p50 ms": None if p50 is None else 1000 * p50, "p99 ms": None if p99 is None else 1000 * p99,
            "mean ms": 1000 * h.total / h.count if h.count else None,
        })  # fmt: skip
    return rows


def stage_table(now: Scrape) -> list[dict]:
    """p50/p99 of the encoder (per modal) and of FAISS (per gallery), in ms."""
    rows = []
    for metric, label, stage in (
        ("lyric2vec_encode_seconds", "modal", "encode"),
        ("lyric2vec_faiss_search_seconds", "gallery", "faiss search"),
    ):
        for name, h in sorted(by_label(now.histograms.get(metric, {}), label).items()):
            p50, p99 = h.quantile(0.5), h.quantile(0.99)
            rows.append({"stage": stage, "of": f"{label} {name}", "count": int(h.count),
                         "p50 ms": None if p50 is None else 1000 * p50,
                         "p99 ms": None if p99 is None else 1000 * p99})  # fmt: skip
    return rows
