"""One video's segment embeddings: what the ``segment_embeddings`` asset stores.

The artefact carries the segments it embeds (times and text) beside their vectors, so a
season shard is built from embeddings alone and can never pair a vector with another
segment's text. Format: a JSON header (episode, model, dimension, quantisation, counts, the
transcript's data version) and little-endian arrays, zstd-compressed.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from ..snapshot.quantization import QUANTIZATIONS, QuantizedVectors, quantize
from .embedder import Embedder
from .errors import TranscriptError
from .records import Transcript

EMBEDDINGS_FORMAT = "citywok-segment-embeddings"
EMBEDDINGS_FORMAT_VERSION = 1
_MAGIC = b"CWSE"
_HEADER = struct.Struct("<4sI")


@dataclass(frozen=True)
class SegmentEmbeddings:
    """A video's non-empty transcript segments, in time order, with one unit vector each."""

    episode_id: str
    model: str
    start: np.ndarray  # (n,) float32 seconds
    end: np.ndarray  # (n,) float32 seconds
    texts: tuple[str, ...]
    vectors: QuantizedVectors
    transcript_version: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def dim(self) -> int:
        return int(self.vectors.data.shape[1])

    @property
    def quantization(self) -> str:
        return self.vectors.quantization


def embed_transcript(
    transcript: Transcript,
    embedder: Embedder,
    *,
    episode_id: str,
    quantization: str = "float16",
    transcript_version: str = "",
) -> SegmentEmbeddings:
    """Embed every segment that has text (silence gives an empty result, not an error)."""
    if quantization not in QUANTIZATIONS:
        raise TranscriptError(
            f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    segments = sorted(
        (s for s in transcript.segments if s.text.strip()), key=lambda s: (s.start, s.end)
    )
    texts = tuple(" ".join(s.text.split()) for s in segments)
    return SegmentEmbeddings(
        episode_id=episode_id,
        model=embedder.model_name,
        start=np.array([s.start for s in segments], dtype=np.float32),
        end=np.array([s.end for s in segments], dtype=np.float32),
        texts=texts,
        vectors=quantize(
            embedder.embed(texts) if texts else np.zeros((0, embedder.dim), np.float32),
            quantization,
        ),
        transcript_version=transcript_version,
    )


def pack_embeddings(emb: SegmentEmbeddings) -> tuple[bytes, str]:
    """Serialise; returns the compressed bytes and their data version."""
    kind = emb.vectors.quantization
    texts = json.dumps(list(emb.texts), ensure_ascii=False).encode()
    header = json.dumps(
        {
            "format": EMBEDDINGS_FORMAT,
            "format_version": EMBEDDINGS_FORMAT_VERSION,
            "episode_id": emb.episode_id,
            "model": emb.model,
            "dim": emb.dim,
            "quantization": kind,
            "n": len(emb),
            "texts_bytes": len(texts),
            "transcript_version": emb.transcript_version,
        },
        sort_keys=True,
    ).encode()
    parts = [
        _HEADER.pack(_MAGIC, len(header)),
        header,
        texts,
        np.ascontiguousarray(emb.start, dtype="<f4").tobytes(),
        np.ascontiguousarray(emb.end, dtype="<f4").tobytes(),
        np.ascontiguousarray(
            emb.vectors.data, dtype="<f2" if kind == "float16" else "i1"
        ).tobytes(),
    ]
    if kind == "int8":
        assert emb.vectors.scale is not None
        parts.append(np.ascontiguousarray(emb.vectors.scale, dtype="<f4").tobytes())
    body = b"".join(parts)
    return zstandard.ZstdCompressor(level=6).compress(body), hashlib.sha256(body).hexdigest()[:16]


def unpack_embeddings(blob: bytes, *, label: str = "segment embeddings") -> SegmentEmbeddings:
    """Inverse of :func:`pack_embeddings`; raises ``ValueError`` naming ``label`` otherwise."""
    try:
        body = zstandard.ZstdDecompressor().decompress(blob)
        magic, n_header = _HEADER.unpack_from(body)
        if magic != _MAGIC:
            raise ValueError("bad magic")
        pos = _HEADER.size
        header = json.loads(body[pos : pos + n_header])
        if header.get("format") != EMBEDDINGS_FORMAT:
            raise ValueError("not a segment embeddings artefact")
        if header.get("format_version") != EMBEDDINGS_FORMAT_VERSION:
            raise ValueError(f"format version {header.get('format_version')} is not supported")
        n, dim, kind = int(header["n"]), int(header["dim"]), str(header["quantization"])
        if kind not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {kind!r}")
        pos += n_header
        texts = tuple(json.loads(body[pos : pos + int(header["texts_bytes"])]))
        pos += int(header["texts_bytes"])
        item = 2 if kind == "float16" else 1
        expected = pos + 8 * n + item * n * dim + (4 * n if kind == "int8" else 0)
        if len(texts) != n or len(body) != expected:
            raise ValueError(f"{len(body)} bytes for {n} segments of {dim} dimensions")
        start = np.frombuffer(body, "<f4", n, pos).astype(np.float32)
        end = np.frombuffer(body, "<f4", n, pos + 4 * n).astype(np.float32)
        pos += 8 * n
        data = np.frombuffer(body, "<f2" if kind == "float16" else "i1", n * dim, pos)
        data = data.reshape(n, dim).astype(np.float16 if kind == "float16" else np.int8)
        pos += item * n * dim
        scale = np.frombuffer(body, "<f4", n, pos).astype(np.float32) if kind == "int8" else None
    except (ValueError, KeyError, TypeError, struct.error, zstandard.ZstdError) as exc:
        raise ValueError(f"{label}: not a readable segment embeddings artefact ({exc})") from exc
    return SegmentEmbeddings(
        episode_id=str(header["episode_id"]),
        model=str(header["model"]),
        start=start,
        end=end,
        texts=texts,
        vectors=QuantizedVectors(data, kind, scale),
        transcript_version=str(header.get("transcript_version", "")),
    )
