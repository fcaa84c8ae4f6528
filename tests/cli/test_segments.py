"""`citywok match --segments`: a long recording's excerpts, from a file, standard input through
a pipe, an HLS stream over HTTP and a stream that stalls; its limit and its bad input.

Everything is real: espeak-ng and ffmpeg render the library, `citywok index` builds the
snapshot, the console script runs in a subprocess and the servers listen on 127.0.0.1.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.demo.library import (
    SAMPLE_RATE,
    encode,
    generate_library,
    render_unseen_samples,
)
from citywok_pipeline.demo.recording import Recording, Source, compose_recording
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.library import scan_media
from tests.streams import gated_http, http_folder, make_hls

from .conftest import CLI_TIMEOUT_S, Citywok

pytestmark = pytest.mark.slow

DURATION_S, INTRO_S = 40.0, 8.0
BOUNDARY_S, OFFSET_S = 1.0, 1.5
SEGMENT_KEYS = {"episode_id", "source", "season", "start_s", "end_s", "offset_s", "confidence",
                "speed", "ambiguous"}  # fmt: skip


@dataclass(frozen=True)
class Library:
    work: Path
    snapshot: Path
    recording: Recording
    wav: Path  # the recording, 16-bit WAV (bytes proportional to time)
    mp3: Path


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, citywok: Citywok) -> Library:
    work = tmp_path_factory.mktemp("segments")
    media, snapshot = work / "media", work / "snapshot"
    generate_library(media, shows=2, seasons=1, episodes=2, duration_s=DURATION_S,
                     intro_s=INTRO_S, seed=5, formats=("flac",))  # fmt: skip
    indexed = citywok("index", media, "--snapshot", snapshot, "--fingerprints-only", "-q")
    assert indexed.returncode == 0, indexed
    sources = [
        Source(f.episode_id, decode(f.path, sample_rate=SAMPLE_RATE), show=f.season_id,
               intro_s=INTRO_S)
        for f in scan_media(media).files
    ]  # fmt: skip
    unseen = render_unseen_samples(duration_s=40.0, seed=8)
    recording = compose_recording(
        sources, unseen, sample_rate=SAMPLE_RATE, rng=np.random.default_rng(11),
        excerpts=(4, 4), excerpt_s=(7.0, 12.0), intro_share=0.0, back_to_back=0.0,
    )  # fmt: skip
    wav = encode(recording.samples, work / "recording.wav", sample_rate=SAMPLE_RATE)
    mp3 = encode(recording.samples, work / "recording.mp3", sample_rate=SAMPLE_RATE)
    return Library(work, snapshot, recording, wav, mp3)


def check_segments(recording: Recording, segments: list[dict], *, upto_s: float = 1e9) -> None:
    """The excerpts that end before ``upto_s``, each one segment with boundaries and offset
    right, and nothing else."""
    expected = [p for p in recording.excerpts() if p.end_s <= upto_s]
    assert len(segments) == len(expected), segments
    for part, seg in zip(expected, segments, strict=True):
        assert set(seg) >= SEGMENT_KEYS
        assert seg["episode_id"] == part.key and not seg["ambiguous"], (part, seg)
        assert abs(seg["start_s"] - part.start_s) <= BOUNDARY_S, (part, seg)
        assert abs(seg["end_s"] - part.end_s) <= BOUNDARY_S, (part, seg)
        expected_offset = part.offset_s + seg["start_s"] - part.start_s
        assert abs(seg["offset_s"] - expected_offset) <= OFFSET_S, (part, seg)


def test_a_recording_file_gives_one_object_with_every_excerpt(
    library: Library, citywok: Citywok
) -> None:
    result = citywok("match", library.snapshot, library.mp3, "--segments", "--json")
    assert result.returncode == 0, result
    (answer,) = result.json_lines()  # one object per input, nothing before it for a file
    assert answer["query"] == str(library.mp3)
    assert answer["duration_s"] == pytest.approx(library.recording.duration_s, abs=0.1)
    assert answer["ended"] == "end" and "warnings" not in answer
    check_segments(library.recording, answer["segments"])


def test_without_json_each_segment_is_a_line_then_a_summary(
    library: Library, citywok: Citywok
) -> None:
    result = citywok("match", library.snapshot, library.wav, "--segments")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    parts = library.recording.excerpts()
    assert len(lines) == len(parts) + 1
    for line, part in zip(lines, parts, strict=False):
        assert part.key in line
    assert lines[-1].endswith(f"{len(parts)} segment(s) in {library.recording.duration_s:.1f} s")


def lines_of(proc: subprocess.Popen[bytes]) -> queue.Queue[bytes | None]:
    """stdout's lines as they come (None at its end), read by a thread."""
    out: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=read, daemon=True).start()
    return out


def test_standard_input_prints_each_segment_before_the_input_ends(
    library: Library, citywok_script: Path
) -> None:
    data = library.wav.read_bytes()
    first = library.recording.excerpts()[0]
    # Up to 4 s of audio past the first excerpt's end: enough to settle it, not the second.
    split = 44 + int((first.end_s + 4.0) * SAMPLE_RATE) * 2
    proc = subprocess.Popen(
        [sys.executable, str(citywok_script), "match", str(library.snapshot), "-", "--segments",
         "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        proc.stdin.write(data[:split])
        proc.stdin.flush()
        out = lines_of(proc)
        line = out.get(timeout=CLI_TIMEOUT_S)
        assert line is not None
        event = json.loads(line)
        # The first segment came while the rest of the recording was still unsent.
        assert event["query"] == "-"
        check_segments(library.recording, [event["segment"]], upto_s=first.end_s)
        proc.stdin.write(data[split:])
        proc.stdin.close()
        rest = []
        while (line := out.get(timeout=CLI_TIMEOUT_S)) is not None:
            rest.append(json.loads(line))
        assert proc.wait(timeout=CLI_TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events, final = rest[:-1], rest[-1]
    assert [e["segment"]["episode_id"] for e in events] == [
        p.key for p in library.recording.excerpts()[1:]
    ]
    check_segments(library.recording, final["segments"])
    assert final["ended"] == "end"


def test_an_hls_stream_over_http_is_segmented_as_it_is_read(
    library: Library, citywok: Citywok
) -> None:
    make_hls(library.mp3, library.work / "hls")
    with http_folder(library.work / "hls") as base:
        result = citywok("match", library.snapshot, f"{base}/live.m3u8", "--segments", "--json")
    assert result.returncode == 0, result
    *events, final = result.json_lines()
    assert [e["segment"]["episode_id"] for e in events] == [
        p.key for p in library.recording.excerpts()
    ]
    check_segments(library.recording, final["segments"])


def test_a_stream_that_stalls_ends_with_the_segments_so_far_and_exit_3(
    library: Library, citywok: Citywok
) -> None:
    data = library.wav.read_bytes()
    second = library.recording.excerpts()[1]
    split = 44 + int((second.end_s + 4.0) * SAMPLE_RATE) * 2
    with gated_http(data, split=split, path="/live.wav") as (url, _gate):  # never opened
        result = citywok(
            "match", library.snapshot, url, "--segments", "--json", "--stall-timeout", "2"
        )
    assert result.returncode == 3, result
    *events, final = result.json_lines()
    assert final["ended"] == "stalled"
    assert "stalled: no audio for 2 s" in final["reason"]
    check_segments(library.recording, final["segments"], upto_s=second.end_s)
    assert len(events) == 2
    assert any("stalled" in line for line in result.error_lines())


def test_a_recording_longer_than_the_limit_is_cut_with_a_warning(
    library: Library, citywok: Citywok
) -> None:
    second = library.recording.excerpts()[1]
    limit = round(second.end_s + 3.0)
    result = citywok(
        "match", library.snapshot, library.mp3, "--segments", "--json", "--max-clip", str(limit)
    )
    assert result.returncode == 0, result
    (answer,) = result.json_lines()
    assert answer["duration_s"] == pytest.approx(limit, abs=0.01)
    assert answer["ended"] == "end"
    assert answer["warnings"] and f"cut at {limit} s" in answer["warnings"][0]
    check_segments(library.recording, answer["segments"], upto_s=second.end_s)
    assert "warning" in result.stderr


def test_a_file_that_is_not_audio_is_bad_input(library: Library, citywok: Citywok) -> None:
    note = library.work / "notes.mp3"
    note.write_text("not a recording\n" * 20)
    result = citywok("match", library.snapshot, note, library.mp3, "--segments", "--json")
    assert result.returncode == 2, result
    (answer,) = result.json_lines()  # the other input is still answered
    assert answer["query"] == str(library.mp3)
    (error,) = result.error_lines()
    assert str(note) in error and "not an audio file" in error
