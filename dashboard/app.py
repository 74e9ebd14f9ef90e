"""Lyric2Vec dashboard: the embedding map, cross-modal search, the ablation table and live service metrics.

    streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port 8501

Reads LYRIC2VEC_HOME (default ./artifacts: umap/projection.parquet, eval_report.json) and the search API
at LYRIC2VEC_API_URL (default http://127.0.0.1:8080). `?q=<text>` in the URL runs that search on load.
Anything missing is reported with its path or URL and the make target that creates it, never a traceback.
"""

import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `dashboard.sources` under `streamlit run`

import altair as alt  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard import sources as src  # noqa: E402

MAX_COLOURS = 15  # colour groups beyond the most common 15 are drawn as "other"
SCRAPE_MAX_AGE_S = 120.0  # an older previous scrape is not used for a rate

st.set_page_config(page_title="Lyric2Vec", page_icon=":musical_note:", layout="wide")
settings = src.Settings.from_env()


@contextlib.contextmanager
def section(name: str):
    """Show a failure inside one section as a message; the rest of the page still renders."""
    try:
        yield
    except Exception as exc:
        if type(exc).__module__.startswith("streamlit"):  # st.rerun / st.stop use exceptions
            raise
        st.error(f"{name}: {type(exc).__name__}: {exc}")


def fmt(v, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


COUNT_COLUMNS = ("n_queries", "gallery_size", "requests", "errors", "count")


def metric_frame(rows: list[dict], digits: int = 3, reorder: bool = True):
    """A table of metrics (retrieval metrics in a readable column order): counts as integers, the rest to
    `digits` places."""
    df = pd.DataFrame(rows)
    if reorder:
        df = df[src.metric_column_order(list(df.columns))]
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool]
    formats = {
        c: ("{:,.0f}" if c in COUNT_COLUMNS else f"{{:,.{1 if c == 'median_rank' else digits}f}}")
        for c in numeric
    }
    return df.style.format(formats, na_rep="—")


# ---------------------------------------------------------------- search (callback runs before the page)


def run_search() -> None:
    query = st.session_state.get("query", "") or ""
    upload = st.session_state.get("audio")
    audio = upload.getvalue() if upload is not None else None
    if not query.strip() and not audio:
        st.session_state["outcome"] = src.SearchOutcome(
            False, 0, error="Type a query or upload a clip first."
        )
        return
    modal = src.choose_modal(st.session_state.get("modal", "auto"), query, audio)
    target = st.session_state.get("target", "default")
    st.session_state["outcome"] = src.search(
        settings.api_url, modal, query, audio, k=st.session_state.get("k", 10),
        target=None if target == "default" else target,
    )  # fmt: skip
    st.session_state["outcome_modal"] = modal


query_text = st.query_params.get("q")
if query_text and st.session_state.get("autorun") != query_text:
    st.session_state["autorun"] = query_text
    st.session_state["query"] = query_text
    run_search()

outcome: src.SearchOutcome | None = st.session_state.get("outcome")
hits = outcome.body.get("results", []) if outcome is not None and outcome.ok else []


# ---------------------------------------------------------------- header


st.title("Lyric2Vec")
st.caption(f"Artifacts `{settings.home}` · search API `{settings.api_url}`")
with section("API status"):
    try:
        h = src.health(settings.api_url)
        galleries = ", ".join(
            f"{g}: {v.get('ntotal', '?')} vectors" for g, v in (h.get("galleries") or {}).items()
        )
        st.success(f"API up · model `{h.get('model_version', '?')}` · {galleries or 'no galleries'}")
    except src.Unavailable as exc:
        st.warning(str(exc))


# ---------------------------------------------------------------- UMAP map


@st.cache_data(show_spinner=False)
def projection(home: str, stamp: float) -> pd.DataFrame:  # stamp: file mtime, so a new projection reloads
    return src.load_projection(Path(home)).to_pandas()


st.header("Embedding space (UMAP)")
with section("UMAP"):
    try:
        df = projection(str(settings.home), src.mtime(settings.home / src.PROJECTION)).copy()
    except src.Unavailable as exc:
        st.info(str(exc))
        df = None
    if df is not None:
        c1, c2 = st.columns([3, 2])
        colour_by = c1.radio(
            "Colour by", ["genre", "artist", "language", "split"], horizontal=True, key="colour"
        )
        spaces = ["fused"] + (["audio"] if {"x_audio", "y_audio"} <= set(df.columns) else [])
        space = c2.radio("Vectors", spaces, horizontal=True, key="space")
        x, y = ("x", "y") if space == "fused" else ("x_audio", "y_audio")
        groups = df[colour_by].fillna("(none)").astype(str)
        top = groups.value_counts().index[:MAX_COLOURS]
        df["colour"] = groups.where(groups.isin(top), "other")
        tooltip = ["title", "artist", "genre", "language", "track_id"]
        points = (
            alt.Chart(df)
            .mark_circle(size=70, opacity=0.8)
            .encode(
                x=alt.X(f"{x}:Q", axis=None, scale=alt.Scale(zero=False)),
                y=alt.Y(f"{y}:Q", axis=None, scale=alt.Scale(zero=False)),
                color=alt.Color(
                    "colour:N",
                    title=colour_by,
                    scale=alt.Scale(scheme="tableau10" if len(top) <= 10 else "tableau20"),
                ),
                tooltip=tooltip,
            )
        )
        layers = [points]
        if hits:  # ring the last search's results on the map
            ranks = {r["track_id"]: i + 1 for i, r in enumerate(hits)}
            found = df[df["track_id"].isin(ranks)].assign(rank=lambda d: d["track_id"].map(ranks))
            layers.append(
                alt.Chart(found)
                .mark_point(size=260, shape="circle", filled=False, color="black", strokeWidth=2)
                .encode(x=f"{x}:Q", y=f"{y}:Q", tooltip=["rank", *tooltip])
            )
        st.altair_chart(alt.layer(*layers).properties(height=460).interactive(), width="stretch")
        st.caption(
            f"{len(df)} tracks · {df['genre'].nunique()} genres · {df['artist'].nunique()} artists · "
            f"{df['language'].nunique()} languages. Hover a point for its title and artist"
            + ("; black rings: results of the last search." if hits else ".")
        )


# ---------------------------------------------------------------- cross-modal search


st.header("Cross-modal search")
with section("Search"):
    c1, c2 = st.columns([3, 2])
    c1.text_input("Text (lyrics or a description)", key="query",
                  placeholder="melancholic acoustic ballad with soft vocals")  # fmt: skip
    c2.file_uploader("Audio clip", type=["wav", "flac", "ogg", "mp3"], key="audio")
    c1, c2, c3, c4 = st.columns([2, 2, 3, 1])
    c1.selectbox("Modal", ["auto", "text", "audio", "fused"], key="modal",
                 help="auto: fused when both a text and a clip are given, else whichever is given")  # fmt: skip
    c2.selectbox("Gallery", ["default", "audio", "lyrics", "fused"], key="target",
                 help="default: text -> audio, audio -> lyrics, fused -> fused")  # fmt: skip
    c3.slider("k", 1, 50, 10, key="k")
    c4.button("Search", type="primary", on_click=run_search, width="stretch")
    if outcome is not None and not outcome.ok:
        (st.warning if outcome.status == 0 else st.error)(outcome.error)
    elif outcome is not None:
        body = outcome.body
        timings = body.get("timings", {})
        st.markdown(f"**{st.session_state.get('outcome_modal', '?')}** query → gallery "
                    f"**{body.get('gallery', '?')}** · model `{body.get('model_version', '?')}`")  # fmt: skip
        cols = st.columns(5)
        for col, key in zip(cols, ("decode_ms", "encode_ms", "search_ms", "total_ms"), strict=False):
            col.metric(key.replace("_ms", " (ms)"), fmt(timings.get(key), 2))
        cols[4].metric("round trip (ms)", fmt(1000 * outcome.seconds, 1))
        table = pd.DataFrame(hits, columns=["track_id", "title", "artist", "genre", "score"])
        table.insert(0, "rank", range(1, len(table) + 1))
        st.dataframe(
            table, hide_index=True, column_config={"score": st.column_config.NumberColumn(format="%.4f")}
        )


# ---------------------------------------------------------------- evaluation


st.header("Retrieval evaluation and ablations")
with section("Evaluation"):
    try:
        report = src.load_eval_report(settings.home)
    except src.Unavailable as exc:
        st.info(str(exc))
        report = None
    if report is not None:
        tables = src.eval_tables(report)
        scalars = src.report_scalars(report)
        if scalars:
            st.caption(" · ".join(f"{k}: `{v}`" for k, v in scalars.items() if k != "goal"))
        if isinstance(report.get("goal"), str):
            st.markdown(f"**{report['goal']}**")
        if not (tables.directions or tables.ablations or tables.other):
            st.warning(f"`{settings.home / src.EVAL_REPORT}` has no recall@k / mrr blocks the dashboard "
                       f"recognises (top-level keys: {sorted(report)}).")  # fmt: skip
        if tables.directions:
            st.subheader("Cross-modal retrieval on the test split")
            st.dataframe(metric_frame(tables.directions), hide_index=True)
        if tables.ablations:
            abl = pd.DataFrame(tables.ablations)
            metric = (
                "recall@10" if "recall@10" in abl else next((c for c in abl if c.startswith("recall@")), None)
            )
            if metric is not None:
                flagged = (
                    abl.get("contains_query", pd.Series(False, index=abl.index)).fillna(False).astype(bool)
                )
                abl["cell"] = [("—" if pd.isna(v) else f"{v:.3f}") + (" *" if f else "")
                               for v, f in zip(abl[metric], flagged, strict=True)]  # fmt: skip
                pivot = abl.pivot_table(index="view", columns="query", values="cell", aggfunc="first")
                pivot = pivot.loc[sorted(pivot.index, key=src.view_sort_key)]
                rnd = f"random {metric}"
                if rnd in abl:  # the baseline of the largest gallery each query was run against
                    best = abl.sort_values("gallery_size", ascending=False) if "gallery_size" in abl else abl
                    pivot.loc["random baseline"] = best.groupby("query")[rnd].first().map("{:.3f}".format)
                st.subheader(
                    f"Ablations: {metric}, gallery represented by one view (rows) per query (columns)"
                )
                st.dataframe(pivot.fillna("—"))
                st.caption("\\* the gallery vector contains the query's own input (not cross-modal). "
                           "Random baseline: exact expectation for the full test gallery; "
                           "per-cell baselines and gallery sizes below.")  # fmt: skip
            with st.expander("All ablation metrics"):
                st.dataframe(metric_frame(tables.ablations), hide_index=True)
        if tables.seed_summary:
            with st.expander("Mean over split seeds"):
                st.dataframe(metric_frame(tables.seed_summary), hide_index=True)
        if tables.other:
            st.subheader("Other metrics in the report")
            st.dataframe(metric_frame(tables.other), hide_index=True)


# ---------------------------------------------------------------- live service metrics


st.header("Service latency and throughput")
live = st.toggle("Refresh every 5 s", key="live")


@st.fragment(run_every=5 if live else None)
def service_metrics() -> None:
    with section("Metrics"):
        try:
            now = src.scrape(settings.api_url)
            before = st.session_state.get("last_scrape")
            if before is None or now.at - before.at > SCRAPE_MAX_AGE_S:
                before = now  # first look: a second scrape 1 s later gives a rate
                time.sleep(1.0)
                now = src.scrape(settings.api_url)
        except src.Unavailable as exc:
            st.warning(str(exc) + " Latency and throughput come from its GET /metrics.")
            return
        st.session_state["last_scrape"] = now
        rows = src.latency_table(now, before)
        if not rows:
            st.info(f"`{settings.api_url}/metrics` has no lyric2vec_request_seconds samples yet: "
                    "run a search to see latency.")  # fmt: skip
            return
        search_rows = [r for r in rows if r["modal"] in ("text", "audio", "fused")] or rows
        cols = st.columns(4)
        cols[0].metric("requests (since start)", f"{sum(r['requests'] for r in rows):,}")
        cols[1].metric("throughput (req/s)", fmt(sum(r["req/s"] or 0.0 for r in rows), 2),
                       help=f"over the last {now.at - before.at:.1f} s")  # fmt: skip
        cols[2].metric("search p50 (ms)", fmt(max((r["p50 ms"] or 0.0) for r in search_rows), 1),
                       help="slowest modal's p50")  # fmt: skip
        cols[3].metric("search p99 (ms)", fmt(max((r["p99 ms"] or 0.0) for r in search_rows), 1),
                       help="slowest modal's p99")  # fmt: skip
        table = pd.DataFrame(rows)
        c1, c2 = st.columns([3, 2])
        c1.dataframe(metric_frame(rows, digits=2, reorder=False), hide_index=True)
        c2.bar_chart(table.set_index("modal")[["p50 ms", "p99 ms"]].fillna(0.0), stack=False,
                     y_label="ms", height=240)  # fmt: skip
        stages = src.stage_table(now)
        if stages:
            st.dataframe(metric_frame(stages, digits=2, reorder=False), hide_index=True)
        st.caption("p50/p99 from the lyric2vec_request_seconds histogram buckets since the service started "
                   "(interpolated as PromQL histogram_quantile); req/s between the last two scrapes.")  # fmt: skip


service_metrics()
