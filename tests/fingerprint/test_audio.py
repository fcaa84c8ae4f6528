"""Decoding real media made by ffmpeg: every container, bytes and URLs, and every bad input."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.fingerprint.audio import DecodeError, decode, decode_bytes, duration_s
from citywok_pipeline.fingerprint.params import ParameterError

RATE = 8000
TONE_HZ = 440.0
# A 2 s stereo 44.1 kHz tone, so every decode below also downmixes and resamples.
TONE = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100", "-ac", "2"]
CODECS = {
    "mp3": "libmp3lame",
    "mp4": "aac",
    "mkv": "libvorbis",
    "m4a": "aac",
    "opus": "libopus",
    "flac": "flac",
    "wav": "pcm_s16le",
    "webm": "libopus",
}


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        check=True,
    )


def dominant_hz(samples: np.ndarray, sample_rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum)) * sample_rate / samples.size


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 2 s tone in every container, by extension."""
    root = tmp_path_factory.mktemp("tones")
    files = {}
    for ext, codec in CODECS.items():
        files[ext] = root / f"tone.{ext}"
        ffmpeg(*TONE, "-c:a", codec, files[ext])
    return files


@pytest.fixture(scope="module")
def late_index_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10 s mp4 with ffmpeg's default layout: the moov atom after the audio."""
    path = tmp_path_factory.mktemp("late") / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=10", "-c:a", "aac", path)
    return path


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server (no range requests, like many) serving a folder on a free port."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def decode_error(source: object, **kwargs: object) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(source, **kwargs)  # type: ignore[arg-type]
    return info.value


# Every container --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", list(CODECS))
def test_each_container_decodes_to_two_seconds_of_the_tone(
    tones: dict[str, Path], ext: str
) -> None:
    samples = decode(tones[ext], sample_rate=RATE)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    # Encoders add a few ms of priming (aac) or padding; more than 3% would be a bug.
    assert abs(samples.size - 2 * RATE) <= 0.03 * 2 * RATE
    assert abs(dominant_hz(samples) - TONE_HZ) < 2
    assert 0.05 < np.abs(samples).max() <= 1.0


def test_another_sample_rate_resamples_to_it(tones: dict[str, Path]) -> None:
    samples = decode(tones["flac"], sample_rate=16000)
    assert samples.size == 2 * 16000
    assert abs(dominant_hz(samples, 16000) - TONE_HZ) < 2


def test_surround_is_averaged_to_mono_not_summed_into_clipping(tmp_path: Path) -> None:
    path = tmp_path / "surround.flac"
    same_everywhere = "volume=4,pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-af", same_everywhere, path)
    samples = decode(path)
    # Each channel peaks at 0.5; ffmpeg's default downmix would reach 1.7 and clip.
    assert np.abs(samples).max() == pytest.approx(0.5, abs=0.01)


def test_full_scale_mp3_stays_within_minus_one_to_one(tmp_path: Path) -> None:
    path = tmp_path / "loud.mp3"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-af", "volume=8", path)
    samples = decode(path)
    assert np.abs(samples).max() <= 1.0
    assert np.abs(samples).max() > 0.9


def test_path_objects_and_names_ffmpeg_would_misread_decode(tones: dict[str, Path]) -> None:
    # "-x" looks like an option and "a:b" like a protocol to ffmpeg's -i.
    for name in ("-x.flac", "a:b.flac", "with space.flac"):
        odd = tones["flac"].with_name(name)
        odd.write_bytes(tones["flac"].read_bytes())
        assert decode(odd).size == 2 * RATE
        assert decode(str(odd)).size == 2 * RATE


# Bytes and URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_bytes_decode_exactly_like_the_lossless_file(tones: dict[str, Path], ext: str) -> None:
    from_path = decode(tones[ext])
    np.testing.assert_array_equal(decode(tones[ext].read_bytes()), from_path)


def test_bytes_decode_like_the_mp3_file(tones: dict[str, Path]) -> None:
    from_path = decode(tones["mp3"])
    from_bytes = decode(tones["mp3"].read_bytes())
    # Without seeking ffmpeg cannot read the encoder-delay header, so a few ms differ.
    assert abs(from_bytes.size - from_path.size) <= 0.02 * from_path.size
    assert dominant_hz(from_bytes) == pytest.approx(dominant_hz(from_path), abs=1)


def test_bytearray_and_memoryview_are_bytes_too(tones: dict[str, Path]) -> None:
    data = tones["wav"].read_bytes()
    expected = decode(data)
    np.testing.assert_array_equal(decode(bytearray(data)), expected)
    np.testing.assert_array_equal(decode(memoryview(data)), expected)


def test_http_url_decodes_like_the_file(
    tones: dict[str, Path], http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    (root / "x.flac").write_bytes(tones["flac"].read_bytes())
    np.testing.assert_array_equal(decode(f"{base}/x.flac"), decode(tones["flac"]))


def test_file_url_decodes_with_escapes_undone(tones: dict[str, Path]) -> None:
    spaced = tones["flac"].with_name("a b.flac")
    spaced.write_bytes(tones["flac"].read_bytes())
    samples = decode(spaced.as_uri())
    assert "%20" in spaced.as_uri()
    np.testing.assert_array_equal(samples, decode(tones["flac"]))


def test_missing_http_file_is_reported_as_not_fetched(http_root: tuple[Path, str]) -> None:
    _, base = http_root
    err = decode_error(f"{base}/nope.flac")
    assert err.source == f"{base}/nope.flac"
    assert "could not be fetched" in err.reason
    assert "404" in err.reason


def test_url_credentials_stay_out_of_the_message(http_root: tuple[Path, str]) -> None:
    _, base = http_root
    err = decode_error(base.replace("http://", "http://user:hunter2@") + "/nope.flac")
    assert "hunter2" not in str(err)
    assert err.source == f"{base}/nope.flac"


# Bad inputs -------------------------------------------------------------------------------


def test_missing_file_is_reported_not_found(tmp_path: Path) -> None:
    err = decode_error(tmp_path / "missing.wav")
    assert str(err) == f"{tmp_path / 'missing.wav'}: file not found"


def test_empty_file_is_reported_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").touch()
    err = decode_error(tmp_path / "empty.wav")
    assert "empty.wav" in str(err)
    assert "file is empty" in err.reason


def test_empty_bytes_are_reported_as_no_data() -> None:
    err = decode_error(b"")
    assert str(err) == "<bytes>: no data (0 bytes)"


def test_directory_is_reported_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / "season.mp3").mkdir()
    err = decode_error(tmp_path / "season.mp3")
    assert "season.mp3" in str(err)
    assert "is a directory" in err.reason


def test_unreadable_file_is_reported_permission_denied(
    tones: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tones["wav"].with_name("locked.wav")
    locked.write_bytes(tones["wav"].read_bytes())
    locked.chmod(0)
    if os.geteuid() == 0:
        # Root reads any file, so the kernel never refuses it here (tests and CI run as
        # root): stand in for the permission check, the one thing that cannot happen.
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
        )
    err = decode_error(locked)
    assert "locked.wav" in str(err)
    assert "permission denied" in err.reason


@pytest.mark.parametrize("lines", [1, 2000], ids=["one-line", "long"])
def test_text_file_is_not_an_audio_file(tmp_path: Path, lines: int) -> None:
    # ffmpeg rejects one line outright, but opens a long .txt as an ANSI-art video.
    path = tmp_path / "notes.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * lines)
    err = decode_error(path)
    assert "notes.txt" in str(err)
    assert "not an audio file" in err.reason
    assert "(ffmpeg: " in err.reason


def test_png_image_is_not_an_audio_file(tmp_path: Path) -> None:
    path = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=32x32", "-frames:v", "1", path)
    for source, name in ((path, "cover.png"), (path.read_bytes(), "<bytes>")):
        err = decode_error(source)
        assert name in str(err)
        assert "not an audio file: it is an image (png)" in err.reason
        assert "does not contain any stream" in err.reason


def test_video_without_sound_has_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=32x32:duration=1", "-c:v", "mpeg4", path)
    err = decode_error(path)
    assert "silent.mp4" in str(err)
    assert "has no audio stream, only video (mpeg4)" in err.reason


def test_random_bytes_are_corrupt_or_not_audio() -> None:
    err = decode_error(np.random.default_rng(7).bytes(5000), label="upload.bin")
    assert err.source == "upload.bin"
    assert "truncated or corrupt" in err.reason or "not an audio file" in err.reason


@pytest.mark.parametrize(
    ("ext", "keep", "ffmpeg_says"),
    [("flac", 200, "End of file"), ("mp4", 3000, "moov atom not found"), ("wav", 44, "data")],
)
def test_truncated_file_is_reported_truncated_or_corrupt(
    tones: dict[str, Path], tmp_path: Path, ext: str, keep: int, ffmpeg_says: str
) -> None:
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(tones[ext].read_bytes()[:keep])
    err = decode_error(path)
    assert f"cut.{ext}" in str(err)
    assert "truncated or corrupt" in err.reason
    assert ffmpeg_says in err.reason


def test_mp3_cut_midway_decodes_as_far_as_it_goes(tones: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "half.mp3"
    data = tones["mp3"].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    samples = decode(path)
    assert 0.3 * 2 * RATE < samples.size < 0.7 * 2 * RATE
    assert abs(dominant_hz(samples) - TONE_HZ) < 3


def test_audio_cut_to_nothing_decodes_to_no_samples(tones: dict[str, Path], tmp_path: Path) -> None:
    # A real file that ffmpeg decodes "successfully" (exit 0) to zero samples.
    path = tmp_path / "nothing.wav"
    ffmpeg("-i", tones["wav"], "-t", "0", path)
    assert path.stat().st_size > 0
    err = decode_error(path)
    assert "nothing.wav" in str(err)
    assert "decoded to no audio samples (ffmpeg exited 0)" in err.reason


def test_mp4_with_late_index_as_bytes_decodes_to_no_samples_with_the_remedy(
    late_index_mp4: Path,
) -> None:
    assert decode(late_index_mp4).size == pytest.approx(10 * RATE, rel=0.01)
    err = decode_error(late_index_mp4.read_bytes(), label="<stdin>")
    assert err.source == "<stdin>"
    assert "decoded to no audio samples (ffmpeg exited 0)" in err.reason
    assert "faststart" in err.reason


def test_mp4_with_late_index_streamed_without_ranges_decodes_to_no_samples(
    late_index_mp4: Path, http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    (root / "late.mp4").write_bytes(late_index_mp4.read_bytes())
    err = decode_error(f"{base}/late.mp4")
    assert err.source == f"{base}/late.mp4"
    assert "decoded to no audio samples (ffmpeg exited 0)" in err.reason


def test_missing_ffmpeg_says_how_to_install_it(
    tones: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    err = decode_error(tones["wav"])
    assert "tone.wav" in str(err)
    assert "ffmpeg is not installed" in err.reason
    assert "apt-get install ffmpeg" in err.reason


def test_server_that_never_answers_times_out() -> None:
    # The kernel accepts the connection into the backlog; nobody ever replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.flac"
        start = time.monotonic()
        err = decode_error(url, timeout_s=0.5)
        assert time.monotonic() - start < 5
    assert err.source == url
    assert "timed out after 0.5 s" in err.reason


def test_label_names_the_input_in_errors(tmp_path: Path) -> None:
    err = decode_error(tmp_path / "missing.wav", label="episode 3")
    assert str(err) == "episode 3: file not found"


# Arguments and the error type ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -8000, 8, 8000.0, True, "8000", 10**7])
def test_invalid_sample_rate_is_a_parameter_error(tones: dict[str, Path], rate: object) -> None:
    with pytest.raises(ParameterError, match="sample_rate"):
        decode(tones["wav"], sample_rate=rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1.0, "5"])
def test_invalid_timeout_is_a_parameter_error(tones: dict[str, Path], timeout: object) -> None:
    with pytest.raises(ParameterError, match="timeout_s"):
        decode(tones["wav"], timeout_s=timeout)  # type: ignore[arg-type]


def test_source_of_another_type_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="source must be"):
        decode(42)  # type: ignore[arg-type]


def test_decode_error_survives_pickling_from_a_worker() -> None:
    err = pickle.loads(pickle.dumps(DecodeError("a.mp3", "file not found")))
    assert (err.source, err.reason, str(err)) == (
        "a.mp3",
        "file not found",
        "a.mp3: file not found",
    )


def test_duration_is_samples_over_rate() -> None:
    assert duration_s(np.zeros(16000, np.float32), 8000) == 2.0
    with pytest.raises(ParameterError):
        duration_s(np.zeros((2, 8000), np.float32), 8000)
    with pytest.raises(ParameterError):
        duration_s(np.zeros(8000, np.float32), 0)


def test_damage_midway_is_decoded_around_with_a_warning(
    tones: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "scratched.flac"
    data = bytearray(tones["flac"].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 256] = bytes(range(256))
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="citywok_pipeline.fingerprint.audio"):
        clean = decode(tones["flac"])
        assert caplog.records == []
        samples = decode(path)
    # ffmpeg skips the broken frame and exits 0: most of the episode still fingerprints.
    assert 0.8 * clean.size < samples.size <= clean.size
    [record] = caplog.records
    assert "scratched.flac: decoded with errors" in record.getMessage()


# decode_bytes: an upload's bytes, decoded in this process (PyAV) or by the ffmpeg command.


@pytest.mark.parametrize("ext", sorted(CODECS))
@pytest.mark.parametrize("in_process", [True, False], ids=["libav", "ffmpeg"])
def test_uploaded_bytes_decode_like_the_file(
    tones: dict[str, Path], ext: str, in_process: bool
) -> None:
    path = tones[ext]
    samples = decode_bytes(path.read_bytes(), suffix=path.suffix, in_process=in_process)
    expected = decode(path)
    assert samples.dtype == np.float32 and samples.shape == expected.shape
    # The same libav decoders and resampler: equal up to float rounding.
    np.testing.assert_allclose(samples, expected, rtol=0, atol=1e-6)


def test_uploaded_mp4_with_late_index_decodes_in_process(late_index_mp4: Path) -> None:
    # What a pipe cannot do (see above): libav reads the bytes from a file, with seeking.
    samples = decode_bytes(late_index_mp4.read_bytes(), label="clip.mp4")
    assert samples.size == pytest.approx(10 * RATE, rel=0.01)
    assert abs(dominant_hz(samples) - TONE_HZ) < 3


def test_uploaded_bytes_stop_after_max_seconds(late_index_mp4: Path) -> None:
    data = late_index_mp4.read_bytes()
    whole = decode_bytes(data)
    for in_process in (True, False):
        first = decode_bytes(data, max_seconds=2.5, in_process=in_process)
        assert first.size == round(2.5 * RATE)
        np.testing.assert_allclose(first, whole[: first.size], rtol=0, atol=1e-6)


def test_a_bad_upload_gets_the_reason_the_ffmpeg_command_gives(tmp_path: Path) -> None:
    png = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=32x32", "-frames:v", "1", png)
    silent = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=32x32:duration=1", "-c:v", "mpeg4", silent)
    uploads = {
        "notes.mp3": (b"shopping list\n" * 20, "not an audio file: it looks like text"),
        "cover.png": (png.read_bytes(), "not an audio file: it is an image (png)"),
        "silent.mp4": (silent.read_bytes(), "has no audio stream, only video (mpeg4)"),
    }
    for name, (data, reason) in uploads.items():
        with pytest.raises(DecodeError) as info:
            decode_bytes(data, label=name, suffix=Path(name).suffix)
        assert info.value.source == name
        assert reason in info.value.reason
    with pytest.raises(DecodeError, match="no data"):
        decode_bytes(b"", label="empty.mp3")


def test_a_damaged_upload_is_decoded_around(tones: dict[str, Path]) -> None:
    # libav in this process stops at the damage; the ffmpeg command skips it and goes on.
    data = bytearray(tones["flac"].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 256] = bytes(range(256))
    clean = decode(tones["flac"])
    samples = decode_bytes(bytes(data), label="scratched.flac")
    assert 0.8 * clean.size < samples.size <= clean.size
    assert abs(dominant_hz(samples) - TONE_HZ) < 3


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), True])
def test_invalid_max_seconds_is_a_parameter_error(tones: dict[str, Path], seconds: object) -> None:
    with pytest.raises(ParameterError):
        decode_bytes(tones["wav"].read_bytes(), max_seconds=seconds)  # type: ignore[arg-type]


# Bounded decoding: hostile uploads and files cost what --max-clip and the timeout allow.


@pytest.fixture(scope="module")
def ten_hours_flac(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """10 hours of silence at 1 kHz as a 16 kB FLAC (the largest frames FLAC allows), clean and with
    its first frame damaged: libav in this process refuses the damaged one, so it goes to
    the ffmpeg command, which skips the damage and decodes the rest."""
    root = tmp_path_factory.mktemp("ten-hours")
    clean = root / "ten-hours.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono", "-t", "36000", "-c:a", "flac",
           "-frame_size", "65535", "-strict", "-2", clean)  # fmt: skip
    data = bytearray(clean.read_bytes())
    first_frame = data.find(b"\xff\xf8")  # FLAC's frame sync code
    data[first_frame + 16 : first_frame + 32] = bytes(range(16))
    damaged = root / "damaged.flac"
    damaged.write_bytes(bytes(data))
    assert clean.stat().st_size < 50_000
    return clean, damaged


DECODE_AND_REPORT = """
import json, resource, sys
from citywok_pipeline.fingerprint.audio import decode, decode_bytes
path, how = sys.argv[1], sys.argv[2]
if how == "file":
    x = decode(path, max_seconds=120)
else:
    x = decode_bytes(open(path, "rb").read(), max_seconds=120, in_process=how == "libav")
# VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss across exec, so a child of a large pytest
# process would report the parent's peak.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
peak = hwm + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"samples": int(x.size), "peak_rss_mb": peak / 1024}))
"""


@pytest.mark.parametrize("how", ["libav", "ffmpeg", "file"])
def test_ten_hours_in_a_small_file_cost_only_max_seconds_of_audio(
    ten_hours_flac: tuple[Path, Path], how: str
) -> None:
    # Every path: in this process then the ffmpeg command (the damage sends it there), the
    # ffmpeg command alone (--decoder ffmpeg), a file (citywok match). Decoding all 10 hours
    # would hold 1.1 GB of samples, and the ffmpeg command's output as much again.
    _, damaged = ten_hours_flac
    out = subprocess.run(
        [sys.executable, "-c", DECODE_AND_REPORT, str(damaged), how],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["samples"] == 120 * RATE
    assert report["peak_rss_mb"] < 400, report


@pytest.mark.parametrize("in_process", [True, False], ids=["libav", "ffmpeg"])
def test_decoding_an_upload_past_its_time_limit_is_a_clear_error(
    ten_hours_flac: tuple[Path, Path], in_process: bool
) -> None:
    clean, _ = ten_hours_flac
    with pytest.raises(DecodeError) as info:
        decode_bytes(clean.read_bytes(), label="long.flac", timeout_s=0.05, in_process=in_process)
    assert str(info.value) == "long.flac: decoding timed out after 0.05 s"


def test_a_huge_sparse_file_stops_at_the_time_limit(tmp_path: Path) -> None:
    # 50 GB of zeros named .mp3 (sparse: no disk used): ffmpeg's mp3 reader would scan it all.
    path = tmp_path / "huge.mp3"
    with open(path, "wb") as f:
        f.truncate(50 << 30)
    err = decode_error(path, timeout_s=1, max_seconds=120)
    assert err.reason == "decoding timed out after 1 s"


def test_a_stream_is_read_by_ffmpeg_only_as_far_as_max_seconds(
    ten_hours_flac: tuple[Path, Path],
) -> None:
    clean, _ = ten_hours_flac
    with open(clean, "rb") as stream:
        samples = decode(stream, max_seconds=2.5, label="<stdin>")
    assert samples.size == round(2.5 * RATE)
