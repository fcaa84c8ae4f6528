"""Decoding live inputs as they arrive: a pipe, a stream served in pieces, an HLS playlist,
and the ways a live input goes wrong (it stalls, breaks off, is not audio, runs too long)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.fingerprint.audio import (
    DecodeError,
    StreamStalled,
    decode,
    decode_stream,
)
from citywok_pipeline.fingerprint.params import ParameterError
from tests.streams import gated_http, gated_pipe, http_folder, make_hls

RATE = 8000
SECONDS = 6.0


@pytest.fixture(scope="module")
def tone_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "tone.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={SECONDS}:sample_rate=44100", "-c:a", "libmp3lame",
         "-b:a", "64k", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tone_wav(tone_mp3: Path) -> Path:
    path = tone_mp3.with_suffix(".wav")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(tone_mp3), str(path)],
        check=True,
    )
    return path


def read_until_gate(stream, gate) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Samples that came before the gate was opened (opened at the first chunk), and all."""
    before = total = 0
    for chunk in stream:
        total += chunk.size
        if not gate.opened.is_set():
            before = total
            gate.open()
    return before, total


def test_a_stream_served_in_pieces_yields_samples_before_the_rest_is_sent(
    tone_mp3: Path,
) -> None:
    data = tone_mp3.read_bytes()
    with gated_http(data, split=len(data) // 2) as (url, gate):
        stream = decode_stream(url, sample_rate=RATE, chunk_s=0.25)
        before, total = read_until_gate(stream, gate)
    # Samples arrived while half of the file was still held back by the server.
    assert 0 < before < total
    assert abs(total - SECONDS * RATE) <= 0.05 * RATE
    assert not stream.truncated and stream.samples == total


def test_standard_input_is_read_as_it_arrives_like_the_whole_file(tone_wav: Path) -> None:
    data = tone_wav.read_bytes()
    with gated_pipe(data, split=len(data) // 3) as (fd, gate), open(fd, "rb") as pipe:
        chunks = []
        for chunk in decode_stream(pipe, sample_rate=RATE, label="<stdin>", chunk_s=0.25):
            chunks.append(chunk)
            gate.open()
    streamed = np.concatenate(chunks)
    whole = decode(tone_wav, sample_rate=RATE)
    assert len(chunks) > 1
    np.testing.assert_array_equal(streamed, whole)


def test_an_hls_playlist_served_over_http_decodes_to_the_whole_recording(
    tone_mp3: Path, tmp_path: Path
) -> None:
    make_hls(tone_mp3, tmp_path / "hls")
    with http_folder(tmp_path / "hls") as base:
        chunks = list(decode_stream(f"{base}/live.m3u8", sample_rate=RATE))
    samples = np.concatenate(chunks)
    assert abs(samples.size - SECONDS * RATE) <= 0.1 * RATE
    spectrum = np.abs(np.fft.rfft(samples[:RATE] * np.hanning(RATE)))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 Hz bins: the tone came through


def test_a_stream_that_stalls_ends_with_the_samples_so_far_and_says_so(tone_mp3: Path) -> None:
    data = tone_mp3.read_bytes()
    got = 0
    with gated_http(data, split=len(data) // 2) as (url, _gate):  # never opened in time
        stream = decode_stream(url, sample_rate=RATE, stall_timeout_s=1.0, chunk_s=0.25)
        with pytest.raises(StreamStalled) as info:
            for chunk in stream:
                got += chunk.size
    assert got > RATE  # the first half came through before the stall
    assert info.value.source == url
    assert "stalled: no audio for 1 s" in info.value.reason
    assert stream.samples == got


def test_a_stream_longer_than_the_limit_is_cut_there(tone_mp3: Path) -> None:
    stream = decode_stream(tone_mp3, sample_rate=RATE, max_seconds=2.5, chunk_s=0.5)
    total = sum(chunk.size for chunk in stream)
    assert total == round(2.5 * RATE)
    assert stream.truncated


def test_text_on_standard_input_is_not_an_audio_file(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("this is not audio\n" * 50)
    with open(note, "rb") as f, pytest.raises(DecodeError) as info:
        list(decode_stream(f, sample_rate=RATE, label="<stdin>"))
    assert info.value.source == "<stdin>"
    assert "not an audio file" in info.value.reason


def test_a_stream_that_cannot_be_fetched_is_reported_so(tmp_path: Path) -> None:
    with http_folder(tmp_path) as base, pytest.raises(DecodeError) as info:
        list(decode_stream(f"{base}/missing.mp3", sample_rate=RATE))
    assert "could not be fetched" in info.value.reason


def test_leaving_a_stream_early_stops_ffmpeg(tone_mp3: Path) -> None:
    data = tone_mp3.read_bytes()
    with gated_http(data, split=len(data) // 2) as (url, _gate):
        with decode_stream(url, sample_rate=RATE, chunk_s=0.25) as stream:
            first = next(iter(stream))
        assert first.size > 0
        # Closed while the server still holds the rest back: nothing more comes.
        assert list(stream) == []


@pytest.mark.parametrize("kwargs", [{"stall_timeout_s": 0}, {"chunk_s": -1}, {"max_seconds": 0}])
def test_bad_stream_arguments_are_parameter_errors(tone_mp3: Path, kwargs: dict) -> None:
    with pytest.raises(ParameterError):
        decode_stream(tone_mp3, **kwargs)
