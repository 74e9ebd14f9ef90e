"""`python -m lyric2vec_pipeline.cli pipeline|ingest|summary`: run the asset graph outside the UI.

Runs go through a persistent Dagster instance (DAGSTER_HOME, default <home>/dagster_home), so every
materialization made here shows in `dagster dev` with its metadata and lineage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.table import Table

from lyric2vec_pipeline.assets.sources import (
    SONGBOOK_PARTITION_KEYS,
    catalogue_partitions,
    register_user_batch,
)
from lyric2vec_pipeline.checks import catalogue_checks
from lyric2vec_pipeline.definitions import catalogue_assets, model_assets, model_checks
from lyric2vec_pipeline.resources import LyricHome, default_home

console = Console(width=None if sys.stdout.isatty() else 140)
SAMPLE_TEXT = "a slow German chorale in a minor key, organ"


def instance_for(home: LyricHome) -> dg.DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        dagster_home = home.path("dagster_home")
        dagster_home.mkdir(parents=True, exist_ok=True)
        (dagster_home / "dagster.yaml").touch()
        os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dg.DagsterInstance.get()


def _is_built(instance: dg.DagsterInstance, home: LyricHome, partition: str) -> bool:
    """A partition is reused when its spectrograms were materialized and are still on disk."""
    if not (home.path("spectrograms", partition, "mels.npy").exists() and home.db_path.exists()):
        return False
    status = instance.get_status_by_partition(
        dg.AssetKey("spectrograms"), partition_keys=[partition], partitions_def=catalogue_partitions
    )
    return bool(status) and str(status.get(partition)).endswith("MATERIALIZED")


def materialize_partition(instance: dg.DagsterInstance, home: LyricHome, partition: str, run_config: dict | None = None) -> bool:
    instance.add_dynamic_partitions("catalogue", [partition])
    result = dg.materialize(
        [*catalogue_assets, *catalogue_checks],
        partition_key=partition,
        instance=instance,
        resources={"home": home},
        run_config=run_config or {},
        raise_on_error=False,
    )
    return result.success


def summary_table(home: LyricHome, timings: dict[str, float]) -> Table:
    table = Table(title=f"Lyric2Vec catalogue at {home.root}")
    for col in ("partition", "tracks", "with lyrics", "instrumental", "clips", "quarantined", "seconds"):
        table.add_column(col, justify="right" if col != "partition" else "left", no_wrap=True)
    with home.connect(read_only=True) as con:
        rows = con.execute(
            """
            SELECT p.partition,
                   coalesce(t.n, 0), coalesce(t.lyr, 0), coalesce(t.n, 0) - coalesce(t.lyr, 0),
                   coalesce(c.n, 0), coalesce(q.n, 0)
            FROM (SELECT partition FROM tracks UNION SELECT partition FROM quarantine) p
            LEFT JOIN (SELECT partition, count(*) n, count(*) FILTER (has_lyrics) lyr FROM tracks GROUP BY 1) t USING (partition)
            LEFT JOIN (SELECT partition, count(*) n FROM clips GROUP BY 1) c USING (partition)
            LEFT JOIN (SELECT partition, count(*) n FROM quarantine GROUP BY 1) q USING (partition)
            ORDER BY 1
            """
        ).fetchall()
        reasons = con.execute("SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC").fetchall()
    totals = [0] * 5
    for r in rows:
        table.add_row(r[0], *map(str, r[1:]), f"{timings.get(r[0], 0.0):.1f}" if r[0] in timings else "reused")
        totals = [a + b for a, b in zip(totals, r[1:], strict=True)]
    table.add_row("[bold]total", *[f"[bold]{v}" for v in totals], f"[bold]{sum(timings.values()):.1f}")
    if reasons:
        table.caption = "quarantined: " + ", ".join(f"{n} {reason}" for reason, n in reasons)
    return table


STAGES = {  # stage -> unpartitioned assets it materializes after the catalogue
    "catalogue": [],
    "prep": ["text_features", "splits"],
    "all": [a.key.to_user_string() for a in model_assets],
}


def materialize_assets(instance: dg.DagsterInstance, home: LyricHome, names: list[str]) -> bool:
    """Materialize the named unpartitioned assets (in graph order) with their checks."""
    by_name = {a.key.to_user_string(): a for a in model_assets}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise SystemExit(f"unknown asset(s) {unknown}; choose from {sorted(by_name)}")
    selected = [by_name[n] for n in by_name if n in names]
    checks = [c for c in model_checks if any(k.asset_key.to_user_string() in names for k in c.check_keys)]
    result = dg.materialize(
        [*selected, *checks], instance=instance, resources={"home": home}, raise_on_error=False,
    )
    for event in result.get_asset_check_evaluations():
        colour = "green" if event.passed else "red"
        console.print(f"[{colour}]check {event.asset_key.to_user_string()}:{event.check_name} "
                      f"{'passed' if event.passed else 'FAILED'}")
    return result.success


def cmd_assets(args: argparse.Namespace) -> int:
    home = LyricHome(home=args.home)
    return 0 if materialize_assets(instance_for(home), home, args.names) else 1


def cmd_report(args: argparse.Namespace) -> int:
    """eval_report.json (the tri-modal model) and lyrics_retrieval_report.json (the chant recogniser)."""
    from lyric2vec_models.lyrics_match import format_lyrics_report
    from lyric2vec_pipeline.assets.learning import format_report

    home = LyricHome(home=args.home)
    found = 0
    for name, fmt in (("eval_report.json", format_report), ("lyrics_retrieval_report.json", format_lyrics_report)):
        path = home.path(name)
        if not path.exists():
            console.print(f"[yellow]{path} does not exist: run `make eval` (or `make pipeline`) first")
            continue
        console.print(fmt(json.loads(path.read_text())))
        console.print()
        found += 1
    return 0 if found else 1


def cmd_samples(args: argparse.Namespace) -> int:
    """Three searches through the same engine the HTTP service uses: text, audio, fused."""
    import base64

    from lyric2vec_models.serving import SearchEngine

    home = LyricHome(home=args.home)
    engine = SearchEngine(home.root)
    with home.connect(read_only=True) as con:
        clip = con.execute("SELECT track_id, audio_path FROM clips ORDER BY clip_id LIMIT 1").fetchone()
    audio_b64 = base64.b64encode(Path(clip[1]).read_bytes()).decode()
    queries = [
        ("text", {"query": args.text}, f"text: {args.text!r} -> audio gallery"),
        ("audio", {"audio_b64": audio_b64}, f"audio: clip of {clip[0]} -> lyrics gallery"),
        ("fused", {"query": args.text, "audio_b64": audio_b64}, "fused: that text + that clip -> fused gallery"),
    ]
    for modal, kwargs, title in queries:
        response = engine.search(modal, k=5, **kwargs)
        table = Table(title=f"{title}  ({response['timings']['total_ms']:.0f} ms, {response['model_version']})")
        for col in ("rank", "track_id", "title", "artist", "genre", "score"):
            table.add_column(col, no_wrap=col in ("rank", "score"))
        for i, r in enumerate(response["results"], 1):
            table.add_row(str(i), r["track_id"], str(r["title"])[:40], str(r["artist"]), str(r["genre"]), f"{r['score']:.3f}")
        console.print(table)
    engine.close()
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    home = LyricHome(home=args.home)
    instance = instance_for(home)
    run_config = {"ops": {"songbook_sources": {"config": {"limit": args.limit, "vocals": not args.no_vocals}}}}
    timings: dict[str, float] = {}
    ok = True
    for partition in SONGBOOK_PARTITION_KEYS:
        if not args.force and _is_built(instance, home, partition):
            console.print(f"[dim]{partition}: already built, reused (--force rebuilds)")
            continue
        console.print(f"[bold]{partition}[/]: materializing songbook_sources -> tracks -> lyrics -> spectrograms")
        t0 = time.perf_counter()
        ok &= materialize_partition(instance, home, partition, run_config)
        timings[partition] = time.perf_counter() - t0
    console.print(summary_table(home, timings))
    if not ok:
        console.print("[red]some partitions failed: see the run logs in `dagster dev` (make dagster)")
        return 1
    names = STAGES[args.stage]
    if names:
        console.print(f"[bold]materializing {', '.join(names)}")
        t0 = time.perf_counter()
        ok = materialize_assets(instance, home, names)
        console.print(f"model assets: {'done' if ok else '[red]FAILED[/]'} in {time.perf_counter() - t0:.0f} s")
    if ok and args.stage == "all":
        cmd_report(args)
        cmd_samples(args)
    return 0 if ok else 1


def cmd_ingest(args: argparse.Namespace) -> int:
    home = LyricHome(home=args.home)
    instance = instance_for(home)
    key = register_user_batch(home, Path(args.manifest), args.batch)
    ok = materialize_partition(instance, home, key)
    console.print(summary_table(home, {}))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lyric2vec", description=__doc__)
    parser.add_argument("--home", default=default_home(), help="artifacts directory (LYRIC2VEC_HOME)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pipeline", help="build every asset on the embedded songbook")
    p.add_argument("--limit", type=int, default=int(os.environ.get("LYRIC2VEC_SONGBOOK_LIMIT", "0")),
                   help="works per songbook partition (0 = all)")
    p.add_argument("--no-vocals", action="store_true", help="render without the chanted vocal track")
    p.add_argument("--stage", choices=["catalogue", "prep", "all"], default="all",
                   help="stop after the catalogue, after training inputs, or build everything")
    p.add_argument("--text", default=SAMPLE_TEXT, help="text of the sample searches")
    p.add_argument("--force", action="store_true", help="rebuild partitions that are already built")
    p.set_defaults(fn=cmd_pipeline)
    i = sub.add_parser("ingest", help="ingest a user manifest (CSV, JSONL or Parquet) as a new batch")
    i.add_argument("manifest")
    i.add_argument("--batch", required=True, help="batch name; the partition key is user-<batch>")
    i.set_defaults(fn=cmd_ingest)
    a = sub.add_parser("assets", help="materialize unpartitioned assets by name (with their checks)")
    a.add_argument("names", nargs="+")
    a.set_defaults(fn=cmd_assets)
    r = sub.add_parser("report", help="print eval_report.json and lyrics_retrieval_report.json as tables")
    r.set_defaults(fn=cmd_report)
    q = sub.add_parser("samples", help="three sample searches (text, audio, fused) over the built indexes")
    q.add_argument("--text", default=SAMPLE_TEXT)
    q.set_defaults(fn=cmd_samples)
    s = sub.add_parser("summary", help="print the catalogue summary")
    s.set_defaults(fn=lambda a: console.print(summary_table(LyricHome(home=a.home), {})) or 0)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
