"""How the pipeline's per-video artefacts are stored: FLAC audio, packed fingerprints, thumbnails.

Dagster-free, like the core: the assets call these and put the bytes in an artefact store.

- Raw audio: FLAC, mono, 16-bit, at the fingerprint sample rate, encoded bit-exactly (no
  encoder version in the file) so the same samples always give the same bytes and the same
  data version.
- Fingerprints: a small header (JSON: episode, params, count) and the hash keys and anchor
  times as little-endian arrays, zstd-compressed. Reading checks the format and gives the
  params back, so a snapshot is never built from fingerprints made with other params.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from .fingerprint.hashes import Hashes
from .fingerprint.params import FingerprintParams

FINGERPRINTS_FORMAT = "citywok-fingerprints"
FINGERPRINTS_FORMAT_VERSION = 1
_MAGIC = b"CWFP"
_HEADER = struct.Struct("<4sI")


class ArtefactFormatError(ValueError):
    """Stored bytes are not the artefact they should be; the message names it and says why."""


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def data_version(*parts: bytes | str) -> str:
    """A short, stable content version (the first 16 hex digits of a sha256 over ``parts``)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def params_version(params: FingerprintParams) -> str:
    """Eight hex digits naming a parameter set: the basis of the assets' code versions."""
    return hashlib.sha256(params.to_json().encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------------------------
# Raw audio


def encode_flac(samples: np.ndarray, *, sample_rate: int, compression_level: int = 8) -> bytes:
    """Mono float32 samples in [-1, 1] to FLAC bytes (16-bit), deterministically.

    Raises
    ------
    RuntimeError
        ffmpeg is missing or fails.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed: install it with `apt-get install ffmpeg`")
    pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0).astype("<f4").tobytes()
    # A file, not a pipe: ffmpeg seeks back to write the total sample count and MD5 into
    # STREAMINFO, which a pipe would leave empty.
    with tempfile.TemporaryDirectory(prefix="citywok-flac-") as tmp:
        out = Path(tmp) / "audio.flac"
        proc = subprocess.run(
            [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
             "-f", "f32le", "-ar", str(int(sample_rate)), "-ac", "1", "-i", "pipe:0",
             "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact",
             "-c:a", "flac", "-sample_fmt", "s16", "-compression_level", str(compression_level),
             "-y", str(out)],
            input=pcm, capture_output=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(
                "ffmpeg could not encode FLAC: "
                + proc.stderr.decode("utf-8", "replace").strip()[:300]
            )
        return out.read_bytes()


def waveform_png(samples: np.ndarray, *, width: int = 480, height: int = 48) -> bytes:
    """A min/max waveform thumbnail as a grayscale PNG (dark trace on white)."""
    x = np.asarray(samples, dtype=np.float32)
    img = np.full((height, width), 255, dtype=np.uint8)
    if x.size:
        cols = np.array_split(x, width) if x.size >= width else [x] * width
        mid = (height - 1) / 2
        for c, col in enumerate(cols):
            lo = round(mid - float(col.max()) * mid)
            hi = round(mid - float(col.min()) * mid)
            img[max(lo, 0) : min(hi, height - 1) + 1, c] = 40
        img[int(mid), :] = np.minimum(img[int(mid), :], 160)
    raw = b"".join(b"\x00" + row.tobytes() for row in img)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))  # fmt: skip

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))  # fmt: skip


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline (the Dagster UI renders it in the metadata panel)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


# ----------------------------------------------------------------------------------------------
# Fingerprints


@dataclass(frozen=True)
class StoredFingerprints:
    """Fingerprints read back from the store."""

    episode_id: str
    params: FingerprintParams
    hashes: Hashes
    data_version: str

    @property
    def n_postings(self) -> int:
        """Postings this episode gives in a shard (distinct key and anchor frame)."""
        return expected_postings(self.hashes)


def expected_postings(hashes: Hashes) -> int:
    """Distinct (key, rounded anchor frame) pairs: what a shard keeps of these hashes."""
    if not len(hashes):
        return 0
    frames = np.rint(hashes.times).astype(np.uint64)
    return int(np.unique((hashes.keys.astype(np.uint64) << np.uint64(32)) | frames).size)


def pack_fingerprints(
    hashes: Hashes, *, episode_id: str, params: FingerprintParams
) -> tuple[bytes, str]:
    """Serialise one video's hashes; returns the compressed bytes and their data version."""
    header = json.dumps(
        {
            "format": FINGERPRINTS_FORMAT,
            "format_version": FINGERPRINTS_FORMAT_VERSION,
            "episode_id": episode_id,
            "params": params.to_dict(),
            "n": len(hashes),
        },
        sort_keys=True,
    ).encode()
    body = (
        _HEADER.pack(_MAGIC, len(header))
        + header
        + np.ascontiguousarray(hashes.keys, dtype="<u4").tobytes()
        + np.ascontiguousarray(hashes.times, dtype="<f4").tobytes()
    )
    return zstandard.ZstdCompressor(level=10).compress(body), data_version(body)


def unpack_fingerprints(blob: bytes, *, label: str = "fingerprints") -> StoredFingerprints:
    """Inverse of :func:`pack_fingerprints`; raises ArtefactFormatError on anything else."""
    try:
        body = zstandard.ZstdDecompressor().decompress(blob)
        magic, n_header = _HEADER.unpack_from(body)
        if magic != _MAGIC:
            raise ValueError("bad magic")
        header: dict[str, Any] = json.loads(body[_HEADER.size : _HEADER.size + n_header])
        if header.get("format") != FINGERPRINTS_FORMAT:
            raise ValueError("not a fingerprints artefact")
        if header.get("format_version") != FINGERPRINTS_FORMAT_VERSION:
            raise ValueError(f"format version {header.get('format_version')} is not supported")
        n = int(header["n"])
        start = _HEADER.size + n_header
        if len(body) != start + 8 * n:
            raise ValueError(f"{len(body) - start} bytes of arrays for {n} hashes")
        keys = np.frombuffer(body, dtype="<u4", count=n, offset=start).astype(np.uint32)
        times = np.frombuffer(body, dtype="<f4", count=n, offset=start + 4 * n).astype(np.float32)
        params = FingerprintParams.from_dict(header["params"])
    except (ValueError, KeyError, TypeError, struct.error, zstandard.ZstdError) as exc:
        raise ArtefactFormatError(f"{label}: not a readable fingerprints artefact ({exc})") from exc
    return StoredFingerprints(
        str(header["episode_id"]), params, Hashes(keys, times), data_version(body)
    )
