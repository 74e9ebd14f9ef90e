"""Resources: where artifacts live, and the DuckDB catalogue inside it."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from data_contracts.contracts import CLIPS_SCHEMA, QUARANTINE_SCHEMA, TRACKS_SCHEMA


def default_home() -> str:
    return os.environ.get("LYRIC2VEC_HOME", "artifacts")


class LyricHome(dg.ConfigurableResource):
    """The artifacts directory (LYRIC2VEC_HOME, default ./artifacts) and its DuckDB catalogue."""

    home: str = Field(default_factory=default_home, description="Root directory of every artifact.")

    @property
    def root(self) -> Path:
        return Path(self.home).resolve()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def db_path(self) -> Path:
        return self.path("catalogue.duckdb")

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        self.root.mkdir(parents=True, exist_ok=True)
        if read_only and not self.db_path.exists():
            raise FileNotFoundError(f"{self.db_path}: no catalogue yet; materialize the tracks asset first")
        con = duckdb.connect(str(self.db_path), read_only=read_only)
        if not read_only:
            ensure_schema(con)
        return con

    def table(self, name: str, where: str = "", params: list | None = None) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            return pl.from_arrow(con.sql(f"SELECT * FROM {name} {where}", params=params or None).to_arrow_table())


def _create(con: duckdb.DuckDBPyConnection, name: str, schema: dict[str, str]) -> None:
    cols = ", ".join(f'"{c}" {t}' for c, t in schema.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    _create(con, "tracks", TRACKS_SCHEMA)
    _create(con, "clips", CLIPS_SCHEMA)
    _create(con, "quarantine", QUARANTINE_SCHEMA)


def replace_partition(con: duckdb.DuckDBPyConnection, table: str, partition: str, rows: pl.DataFrame) -> None:
    """Delete the partition's rows of `table` and insert `rows`, inside the caller's transaction."""
    con.execute(f"DELETE FROM {table} WHERE partition = ?", [partition])
    if len(rows):
        con.register("_incoming", rows.to_arrow())
        cols = ", ".join(f'"{c}"' for c in rows.columns)
        con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _incoming")
        con.unregister("_incoming")


def refresh_dimensions(con: duckdb.DuckDBPyConnection) -> None:
    """artists, genres and licenses are views of tracks, so they never disagree with it."""
    for name, col in (("artists", "artist"), ("genres", "genre"), ("licenses", "license")):
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT {col} AS name, count(*) AS n_tracks "
            f"FROM tracks GROUP BY {col} ORDER BY n_tracks DESC, name"
        )
