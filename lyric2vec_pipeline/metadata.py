"""Helpers that turn frames and figures into Dagster metadata (markdown tables, inline PNGs)."""

from __future__ import annotations

import base64
import io

import dagster as dg
import numpy as np
import polars as pl


def md_table(df: pl.DataFrame, max_rows: int = 10) -> dg.MetadataValue:
    head = df.head(max_rows)
    if not len(head.columns):
        return dg.MetadataValue.md("(empty)")
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    for row in head.iter_rows():
        cells = [str(v).replace("|", "/").replace("\n", " / ")[:80] for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if len(df) > max_rows:
        lines.append(f"\n({len(df) - max_rows} more rows)")
    return dg.MetadataValue.md("\n".join(lines))


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def md_image(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def spectrogram_figure(mels: list[np.ndarray], titles: list[str], hop_seconds: float):
    """A row of log-mel pictures, time in seconds on x, mel bin on y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(mels), figsize=(4 * len(mels), 2.6), squeeze=False)
    for ax, mel, title in zip(axes[0], mels, titles, strict=True):
        ax.imshow(np.asarray(mel, dtype=np.float32), origin="lower", aspect="auto",
                  extent=(0, mel.shape[1] * hop_seconds, 0, mel.shape[0]), cmap="magma")
        ax.set_title(title[:40], fontsize=8)
        ax.set_xlabel("s")
    axes[0][0].set_ylabel("mel bin")
    return fig
