"""Lyric2Vec models: a pure PyTorch + FAISS library (no Dagster, no BentoML)."""

__version__ = "0.1.0"
