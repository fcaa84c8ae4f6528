"""Fuzzing of the upload decoder (`decode_bytes`, what POST /match runs): random bytes, and
random damage to real files of every container, give samples or a `DecodeError` naming the
upload, within the time limit: never another exception, a crash or a hang.

Each example may run the ffmpeg command (and ffprobe, to say why), so CI tries fewer than
the suite's other fuzz tests (the same fixed, derandomized examples every run); `make
faults` many more.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citywok_pipeline.fingerprint.audio import DecodeError, decode_bytes

from .conftest import FUZZ, FaultFigures, trials

UPLOAD_FUZZ = settings(FUZZ, max_examples=trials(ci=20, long=2000))
SUFFIXES = ["", ".mp3", ".flac", ".wav", ".m4a", ".mp4", ".ogg", ".opus", ".mkv", ".webm", ".txt"]
# Real files to damage: 1 s of a tone in each container ffmpeg writes here.
SEEDS = {
    ".mp3": ["-c:a", "libmp3lame"], ".flac": ["-c:a", "flac"], ".wav": ["-c:a", "pcm_s16le"],
    ".m4a": ["-c:a", "aac"], ".ogg": ["-c:a", "libvorbis"], ".opus": ["-c:a", "libopus"],
    ".mkv": ["-c:a", "libvorbis"],
}  # fmt: skip
LABEL = "fuzzed-upload"


def _seeds() -> dict[str, bytes]:
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory(prefix="citywok-fuzz-") as d:
        for ext, codec in SEEDS.items():
            path = Path(d) / f"seed{ext}"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                            "sine=frequency=440:duration=1:sample_rate=8000", *codec, str(path)],
                           check=True)  # fmt: skip
            out[ext] = path.read_bytes()
    return out


SEED_FILES = _seeds()


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, str]:
    """A real file with random bytes flipped, a random piece cut out or inserted, or cut off."""
    ext = draw(st.sampled_from(sorted(SEED_FILES)))
    data = bytearray(SEED_FILES[ext])
    for _ in range(draw(st.integers(1, 8))):
        if not data:  # cut off whole: nothing left to damage
            break
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 512))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=256))
        else:
            del data[at:]
    return bytes(data) or b"\0", ext


def _decode(data: bytes, suffix: str, figures: FaultFigures, case: str) -> None:
    figures.tally("fuzzing", case, examples=1)
    try:
        samples = decode_bytes(data, label=LABEL, suffix=suffix, max_seconds=5, timeout_s=20)
    except DecodeError as exc:
        assert str(exc).startswith(f"{LABEL}: "), exc
        assert exc.reason and "Traceback" not in exc.reason
        figures.tally("fuzzing", case, clear_errors=1)
        return
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 0 < samples.size <= 5 * 8000
    assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
    figures.tally("fuzzing", case, decoded=1)


@pytest.mark.timeout(900)
@UPLOAD_FUZZ
@given(data=st.binary(min_size=1, max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_are_never_anything_but_samples_or_a_decode_error(
    data: bytes, suffix: str, fault_figures: FaultFigures
) -> None:
    _decode(data, suffix, fault_figures, "upload decoder (random bytes)")


@pytest.mark.timeout(900)
@UPLOAD_FUZZ
@given(file=damaged())
def test_damaged_real_files_are_never_anything_but_samples_or_a_decode_error(
    file: tuple[bytes, str], fault_figures: FaultFigures
) -> None:
    data, suffix = file
    _decode(data, suffix, fault_figures, "upload decoder (damaged files)")
