"""How segment vectors are stored in a shard: ``float16``, or ``int8`` with a scale per row.

Part of the snapshot format (the transcript side quantises with it before a shard is written),
so that ``snapshot`` needs nothing from ``transcripts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..fingerprint.params import ParameterError

Quantization = Literal["float16", "int8"]
QUANTIZATIONS: tuple[str, ...] = ("float16", "int8")


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
        raise ParameterError(
            f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ParameterError(f"vectors must be 2-D (n, dim), got shape {vectors.shape}")
    if quantization == "float16":
        return QuantizedVectors(vectors.astype(np.float16), "float16")
    peak = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(len(vectors), np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    data = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
    return QuantizedVectors(data, "int8", scale)
