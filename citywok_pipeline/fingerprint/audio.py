"""Decode media to mono float32 PCM with ffmpeg, piped to memory.

Any container ffmpeg reads (mp3, mp4, mkv, m4a, opus, flac, wav, webm, ...) from a local
path, an http(s)/file URL or raw bytes. ffmpeg runs once per call with its output piped
back, so there are no temporary files and no ffprobe on the hot path: ffprobe runs only
after a failure, to say more precisely why.

`decode_stream` decodes a live input (standard input, an HLS or Icecast stream, a file served
slowly) as it arrives, in chunks, and says when it stalls.

`decode_bytes` decodes an uploaded file's bytes, by default inside this process with PyAV
(the same libav libraries, the same downmix and resampler settings), for servers: starting
an ffmpeg process costs more than decoding a 5 s clip. What PyAV cannot decode goes to the
ffmpeg command, which either manages or gives the precise reason.

Every problem with the input (missing, empty, not audio, truncated, ffmpeg absent, too
slow) is a `DecodeError` naming the input and the reason; a bad argument is a
`ParameterError`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import select
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import BinaryIO

import numpy as np

from .params import ParameterError

__all__ = [
    "DecodeError",
    "DecodeTimeoutError",
    "DecodedStream",
    "StreamStalled",
    "decode",
    "decode_bytes",
    "decode_stream",
    "duration_s",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `apt-get install ffmpeg` (Debian/Ubuntu) or `brew install ffmpeg` (macOS)"
)
BYTES_LABEL = "<bytes>"
# Rates outside this range are almost always a unit slip (kHz passed for Hz).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# ffprobe only refines an error message: it must never hang the caller for long.
PROBE_TIMEOUT_S = 30.0
# Longest piece of ffmpeg's own message quoted in a reason.
MAX_QUOTE = 200
# ffmpeg's error output kept (its first messages say why; a damaged file repeats them).
MAX_STDERR = 64 << 10

_IMAGE_CODECS = frozenset(
    {
        "png",
        "apng",
        "mjpeg",
        "jpeg2000",
        "jpegls",
        "bmp",
        "gif",
        "webp",
        "tiff",
        "pam",
        "ppm",
        "pgm",
        "pbm",
        "pcx",
        "qoi",
        "sgi",
        "targa",
        "dpx",
        "exr",
        "xbm",
        "xwd",
        "sunrast",
        "svg",
    }
)
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
_NETWORK_ERRORS = (
    "server returned",
    "connection refused",
    "connection timed out",
    "connection reset",
    "failed to resolve",
    "name or service not known",
    "network is unreachable",
    "no route to host",
    "input/output error",
    "protocol not found",
)
_DEMUXER_LINE = re.compile(r"^\[[^\]@]+ @ 0x[0-9a-f]+\] ?")


class DecodeError(Exception):
    """Audio could not be decoded.

    Parameters
    ----------
    source : str
        The input: its path, its URL, or a label such as ``'<bytes>'``.
    reason : str
        Why, in plain words (ffmpeg's own message quoted where it helps).

    Notes
    -----
    ``str(err)`` is ``f"{source}: {reason}"``. Instances pickle, so the error survives a
    trip back from a worker process.
    """

    def __init__(self, source: str, reason: str) -> None:
        # Both go to args so pickling (multiprocessing) rebuilds the error intact.
        super().__init__(source, reason)
        self.source = source
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class DecodeTimeoutError(DecodeError):
    """Decoding took longer than its wall-clock limit (the input is too slow to decode, or
    made to be)."""


@dataclass(frozen=True)
class _Input:
    """What ffmpeg is given: its ``-i`` argument, bytes or a stream for stdin, and the name
    for errors."""

    arg: str
    data: bytes | None
    label: str
    local: bool
    stream: BinaryIO | None = None


def decode(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    sample_rate: int = 8000,
    label: str | None = None,
    timeout_s: float | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode a media file, URL or byte string to mono float32 PCM.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file
        A filesystem path; an ``http://``, ``https://`` or ``file://`` URL string; the
        file's raw bytes (``bytes``, ``bytearray`` or ``memoryview``), fed to ffmpeg's stdin;
        or an open binary file with a descriptor (``sys.stdin.buffer``) that ffmpeg reads
        itself, only as far as it needs.
    sample_rate : int
        Output rate in Hz, 1 kHz to 768 kHz.
    label : str, optional
        Name used in error messages instead of the path or URL (for bytes the default
        is ``'<bytes>'``): useful for uploads and standard input.
    timeout_s : float, optional
        Give up after this many seconds of wall-clock time (ffmpeg is killed). Default: no
        limit.
    max_seconds : float, optional
        Stop after this much audio: the result is the first ``max_seconds`` seconds, and no
        more than that is ever held in memory (a file that decodes to hours of audio costs
        the time of ``max_seconds``). Default: the whole input.

    Returns
    -------
    np.ndarray, shape (n,), float32
        Samples in [-1, 1] at ``sample_rate``. The audio stream ffmpeg picks by default
        is used; its channels are mixed down without gain, so stereo becomes the average.

    Raises
    ------
    DecodeError
        The input is missing, empty, a directory, unreadable, not audio, has no audio
        stream, is truncated or corrupt, decodes to no samples, or takes longer than
        ``timeout_s``; or ffmpeg is not installed.
    ParameterError
        ``sample_rate``, ``timeout_s``, ``max_seconds`` or the type of ``source`` is invalid.

    Notes
    -----
    A truncated or damaged file that ffmpeg still decodes in part (exiting 0) is returned
    as far as it goes, with a logged warning when ffmpeg reported errors: most of an
    episode still fingerprints.
    An MP4/MOV whose index (moov atom) follows the audio cannot be decoded from bytes or
    from a server without range requests: ffmpeg then yields no samples, reported as a
    `DecodeError` with the remedy.

    Examples
    --------
    >>> samples = decode("episode.mkv", sample_rate=8000)  # doctest: +SKIP
    >>> samples.dtype, samples.ndim  # doctest: +SKIP
    (dtype('float32'), 1)
    """
    _check_sample_rate(sample_rate)
    _check_positive("timeout_s", timeout_s)
    _check_positive("max_seconds", max_seconds)
    src = _resolve(source, label)
    limit = _sample_limit(max_seconds, sample_rate)
    cmd = _ffmpeg_command(src, sample_rate)
    try:
        # Capped by bytes, not with -t (the output's timestamps, which skipped damage or a
        # hostile file make lie): the same count of samples as decode_bytes in this process.
        stdin = src.stream if src.stream is not None else src.data
        proc = _run(cmd, stdin, timeout_s, max_stdout=None if limit is None else 4 * limit)
    except FileNotFoundError:
        raise DecodeError(src.label, _not_installed("ffmpeg")) from None
    except subprocess.TimeoutExpired:
        raise DecodeTimeoutError(src.label, f"decoding timed out after {timeout_s:g} s") from None

    n = len(proc.stdout) // 4 if limit is None else min(len(proc.stdout) // 4, limit)
    stderr = proc.stderr.decode("utf-8", "replace")
    if (proc.returncode == 0 or proc.capped) and n > 0:
        if stderr.strip():
            logger.warning(
                "%s: decoded with errors, the audio may be incomplete (ffmpeg: %s)",
                src.label,
                _first_message(stderr, src.arg),
            )
        samples = np.frombuffer(proc.stdout, dtype="<f4", count=n)
        # Decoders (mp3, aac) and the resampler overshoot full scale a little on loud audio.
        return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
    raise DecodeError(src.label, _failure_reason(src, proc.returncode, stderr, timeout_s))


def _ffmpeg_command(
    src: _Input, sample_rate: int, *, before: tuple[str, ...] = (), after: tuple[str, ...] = ()
) -> list[str]:
    """The ffmpeg command that decodes ``src`` to mono float32 on stdout (``before`` and
    ``after`` are options for the input and for the output)."""
    return [
        _require_tool("ffmpeg", src.label),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        *before,
        "-i",
        src.arg,
        "-vn",
        "-sn",
        "-dn",
        "-ac",
        "1",
        # Without it ffmpeg's downmix sums channels at up to 0.7 each (a loud 5.1 track
        # reaches 3.4x full scale); 1.0 normalises the matrix so mono is an average.
        "-rematrix_maxval",
        "1.0",
        "-ar",
        str(int(sample_rate)),
        *after,
        "-f",
        "f32le",
        "pipe:1",
    ]


class StreamStalled(DecodeError):
    """A live input stopped sending audio for longer than the stall limit."""


class DecodedStream:
    """Audio decoded by ffmpeg as it arrives: iterate for chunks of mono float32 samples.

    Made by :func:`decode_stream`. After the iteration, ``samples`` counts what was yielded
    and ``truncated`` says whether it stopped at ``max_seconds`` with more to come. Closing
    it (or leaving a ``with`` block) stops ffmpeg.
    """

    def __init__(
        self,
        src: _Input,
        *,
        sample_rate: int,
        max_seconds: float | None,
        stall_timeout_s: float,
        chunk_s: float,
    ) -> None:
        self.label = src.label
        self.sample_rate = sample_rate
        self.samples = 0
        self.truncated = False
        self._src = src
        self._limit = _sample_limit(max_seconds, sample_rate)
        self._stall_s = stall_timeout_s
        self._chunk = max(1, round(chunk_s * sample_rate))
        self._gen: Iterator[np.ndarray] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._gen is None:
            self._gen = self._read()
        return self._gen

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()  # type: ignore[attr-defined]

    def __enter__(self) -> DecodedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> Iterator[np.ndarray]:
        src = self._src
        # A live input is not held back: the format is told from its first 64 kB and a
        # second of it (ffmpeg's defaults wait for 5 MB or 5 s), and each packet is written
        # out as it is decoded.
        cmd = _ffmpeg_command(
            src,
            self.sample_rate,
            before=("-probesize", "65536", "-analyzeduration", "1000000"),
            after=("-flush_packets", "1"),
        )
        stdin: int | BinaryIO = (
            subprocess.DEVNULL
            if src.stream is None and src.data is None
            else src.stream
            if src.stream is not None
            else subprocess.PIPE
        )
        try:
            proc = subprocess.Popen(
                cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise DecodeError(src.label, _not_installed("ffmpeg")) from None
        err = bytearray()
        threads = [threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)]
        if src.data is not None:
            threads.append(threading.Thread(target=_feed, args=(proc, src.data), daemon=True))
        for t in threads:
            t.start()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = bytearray()
        last = time.monotonic()
        try:
            while True:
                # With samples waiting, hand them on as soon as the input pauses.
                wait = (
                    0.05 if len(pending) >= 4 else max(0.0, last + self._stall_s - time.monotonic())
                )
                ready, _, _ = select.select([fd], [], [], min(wait, 1.0))
                if ready:
                    data = os.read(fd, 1 << 16)
                    if not data:
                        break
                    pending += data
                    last = time.monotonic()
                    if self._limit is not None and self.samples + len(pending) // 4 >= self._limit:
                        pending = pending[: 4 * (self._limit - self.samples)]
                        self.truncated = True
                        yield self._take(pending, len(pending))
                        return
                    if len(pending) < 4 * self._chunk:
                        continue
                if len(pending) >= 4:
                    yield self._take(pending, len(pending) // 4 * 4)
                elif time.monotonic() - last >= self._stall_s:
                    raise StreamStalled(
                        src.label,
                        f"stalled: no audio for {self._stall_s:g} s after "
                        f"{self.samples / self.sample_rate:.1f} s of it",
                    )
            returncode = proc.wait()
            if len(pending) >= 4:
                yield self._take(pending, len(pending) // 4 * 4)
            for t in threads:
                t.join()
            stderr = err.decode("utf-8", "replace")
            if self.samples == 0:
                raise DecodeError(src.label, _failure_reason(src, returncode, stderr, None))
            if returncode != 0:
                first = _first_message(stderr, src.arg)
                raise DecodeError(
                    src.label,
                    f"the input broke off after {self.samples / self.sample_rate:.1f} s of audio"
                    + (f" (ffmpeg: {first})" if first else ""),
                )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()

    def _take(self, pending: bytearray, n: int) -> np.ndarray:
        samples = np.frombuffer(bytes(pending[:n]), dtype="<f4")
        del pending[:n]
        self.samples += samples.size
        return np.clip(samples, -1.0, 1.0).astype(np.float32)


def decode_stream(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    sample_rate: int = 8000,
    label: str | None = None,
    max_seconds: float | None = None,
    stall_timeout_s: float = 30.0,
    chunk_s: float = 0.5,
) -> DecodedStream:
    """Decode a live input (standard input, an HLS or Icecast stream, a file served slowly)
    as it arrives: the samples come in chunks while ffmpeg is still reading.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file
        As `decode`: a path, an ``http(s)://`` URL (ffmpeg reads HLS playlists, Icecast and
        plain files), bytes, or an open binary file with a descriptor (``sys.stdin.buffer``)
        that ffmpeg reads itself.
    sample_rate : int
        Output rate in Hz.
    label : str, optional
        Name used in error messages.
    max_seconds : float, optional
        Stop after this much audio (``truncated`` is then True); default: the whole input.
    stall_timeout_s : float
        A `StreamStalled` error when no audio comes for this long.
    chunk_s : float
        Most seconds of samples in one chunk; a chunk is handed on sooner when the input
        pauses, so a live input is never held back.

    Returns
    -------
    DecodedStream
        Iterate for np.ndarray chunks, shape (n,), float32, in [-1, 1].

    Raises
    ------
    DecodeError
        While iterating: the input is missing, not audio, or cannot be fetched (no samples
        at all, with the reason `decode` gives), or it broke off after some audio.
    StreamStalled
        While iterating: no audio came for ``stall_timeout_s``; the chunks before stand.
    ParameterError
        At once, for a bad argument.
    """
    _check_sample_rate(sample_rate)
    _check_positive("max_seconds", max_seconds)
    _check_positive("stall_timeout_s", stall_timeout_s)
    _check_positive("chunk_s", chunk_s)
    return DecodedStream(
        _resolve(source, label),
        sample_rate=int(sample_rate),
        max_seconds=max_seconds,
        stall_timeout_s=float(stall_timeout_s),
        chunk_s=float(chunk_s),
    )


def _drain(pipe: BinaryIO, into: bytearray) -> None:
    """Read ``pipe`` to its end, keeping its first `MAX_STDERR` bytes."""
    while chunk := os.read(pipe.fileno(), 1 << 16):
        if len(into) < MAX_STDERR:
            into.extend(chunk[: MAX_STDERR - len(into)])


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    # OSError: the command stopped reading (it failed, or was stopped).
    with contextlib.suppress(OSError), proc.stdin:
        proc.stdin.write(data)


def decode_bytes(
    data: bytes,
    *,
    sample_rate: int = 8000,
    label: str | None = None,
    suffix: str = "",
    max_seconds: float | None = None,
    timeout_s: float | None = None,
    in_process: bool = True,
) -> np.ndarray:
    """Decode a whole media file's bytes (an upload) to mono float32 PCM.

    In this process with PyAV by default: the output equals `decode`'s for the same file
    (same libav demuxers, decoders, downmix as an average and resampler), without the cost
    of starting ffmpeg, which dominates for clips of a few seconds. The bytes are written to
    a file in memory (``/dev/shm``) that libav reads with seeking, so an MP4 whose index
    follows the audio decodes too.

    Parameters
    ----------
    data : bytes
        The whole file.
    sample_rate : int
        Output rate in Hz, 1 kHz to 768 kHz.
    label : str, optional
        Name used in error messages (default ``'<bytes>'``).
    suffix : str
        The file's extension (``'.mp3'``), a hint for the ffmpeg command.
    max_seconds : float, optional
        Stop after this much audio: the result is the first ``max_seconds`` seconds, on every
        path (in this process, and the ffmpeg command, in place of it or after it).
    timeout_s : float, optional
        Give up after this many seconds of wall-clock time, both paths together. In this
        process the clock is checked between pieces of decoded audio (a piece is bounded by
        the size of ``data``); the ffmpeg command is killed.
    in_process : bool
        False runs the ffmpeg command every time (through a temporary file): a decoder that
        crashes or hangs on a hostile file then cannot take the caller with it.

    Returns
    -------
    np.ndarray, shape (n,), float32
        Samples in [-1, 1] at ``sample_rate``.

    Raises
    ------
    DecodeError
        As `decode`: what PyAV cannot decode (or everything, without ``in_process``) goes
        to the ffmpeg command, which decodes it or says why not; past ``timeout_s``.
    ParameterError
        ``sample_rate``, ``max_seconds`` or ``timeout_s`` is invalid.
    """
    _check_sample_rate(sample_rate)
    _check_positive("max_seconds", max_seconds)
    _check_positive("timeout_s", timeout_s)
    name = label or BYTES_LABEL
    if not data:
        raise DecodeError(name, "no data (0 bytes)")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    limit = _sample_limit(max_seconds, sample_rate)
    with _upload_file(data, _safe_suffix(suffix)) as path:
        if in_process:
            try:
                samples = _pyav_decode(path, int(sample_rate), limit, deadline)
            except _DecodeTimeout:
                raise DecodeTimeoutError(
                    name, f"decoding timed out after {timeout_s:g} s"
                ) from None
            except Exception as exc:  # any libav failure: ffmpeg says precisely why
                logger.debug("%s: PyAV could not decode it (%s); trying ffmpeg", name, exc)
                samples = None
            if samples is not None and samples.size:  # nothing decoded: ffmpeg says why
                return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise DecodeTimeoutError(name, f"decoding timed out after {timeout_s:g} s")
        try:
            return decode(
                path, sample_rate=sample_rate, label=name, max_seconds=max_seconds, timeout_s=left
            )
        except DecodeTimeoutError:
            # Say the caller's limit, not what was left of it for the command.
            raise DecodeTimeoutError(name, f"decoding timed out after {timeout_s:g} s") from None


@contextlib.contextmanager
def _upload_file(data: bytes, suffix: str) -> Iterator[str]:
    """The bytes as a file libav and ffmpeg can seek in: in memory (``/dev/shm``) where
    there is room, else in the system's temporary folder; deleted afterwards."""
    for folder in dict.fromkeys([_SCRATCH, None]):
        with tempfile.NamedTemporaryFile(dir=folder, prefix="citywok-upload-", suffix=suffix) as f:
            try:
                f.write(data)
                f.flush()
            except OSError:  # /dev/shm full (a container's is small): the next folder
                if folder is None:
                    raise
                continue
            yield f.name
            return


def _safe_suffix(suffix: str) -> str:
    """An extension safe to put in a file name (ffmpeg guesses some formats by it)."""
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,12}", suffix or "") else ""


# Samples (per channel) per frame given to the resampler in _pyav_decode: pieces its buffers
# keep in cache (a whole 5 s clip at once takes it 2-3 times as long; the decoder's own
# frames, ~1,000 samples, cost a pass through the graph each).
_RESAMPLE_CHUNK = 16384

# Where an upload is written for libav to read: memory, where there is a tmpfs.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class _DecodeTimeout(Exception):
    """The wall-clock limit passed while decoding in this process."""


def _pyav_decode(
    path: str, sample_rate: int, limit: int | None, deadline: float | None = None
) -> np.ndarray:
    """Decode with libav in this process: one filter graph reads the file (``amovie``: the
    demuxer and decoder ``decode``'s ffmpeg command uses), then converts it through the
    filters that command uses, all inside libav. Raises on what libav cannot read, or when
    there is no audio stream (the caller asks the ffmpeg command, which says why);
    `_DecodeTimeout` past ``deadline`` (``time.monotonic()``)."""
    import av  # PyAV: libav in-process; a dependency of faster-whisper too

    graph = av.filter.Graph()
    chain = [
        # One decoding thread: a frame-threaded decoder (FLAC) would start threads for every
        # upload (3.6 -> 2.1 ms for a 5 s FLAC clip here) inside a worker that is one per core.
        graph.add("amovie", filename=path, dec_threads="1"),
        graph.add("asetnsamples", f"n={_RESAMPLE_CHUNK}:p=0"),
        # As `decode`: the downmix matrix normalised so that mono is an average.
        graph.add("aresample", f"{sample_rate}:rematrix_maxval=1.0"),
        graph.add("aformat", f"sample_fmts=flt:channel_layouts=mono:sample_rates={sample_rate}"),
        graph.add("abuffersink"),
    ]
    for a, b in itertools.pairwise(chain):
        a.link_to(b)
    graph.configure()
    out: list[np.ndarray] = []
    got = 0
    # Pulling decodes as it goes: past the limit, the rest of the file is never read.
    while limit is None or got < limit:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            break
        out.append(frame.to_ndarray().reshape(-1))
        got += out[-1].size
        if deadline is not None and time.monotonic() > deadline:
            raise _DecodeTimeout
    samples = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
    return samples if limit is None else samples[:limit]


def duration_s(samples: np.ndarray, sample_rate: int) -> float:
    """Length of decoded audio in seconds.

    Parameters
    ----------
    samples : np.ndarray, shape (n,)
        Mono audio, as returned by `decode`.
    sample_rate : int
        Hz.

    Returns
    -------
    float
        ``n / sample_rate``.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, Real) or not sample_rate > 0:
        raise ParameterError(f"sample_rate must be positive, got {sample_rate!r}")
    if np.ndim(samples) != 1:
        raise ParameterError(f"expected mono audio of shape (n,), got shape {np.shape(samples)}")
    return len(samples) / float(sample_rate)


@dataclass(frozen=True)
class _Result:
    """What a command gave: its exit status, its output (capped) and its error messages."""

    returncode: int
    stdout: bytes
    stderr: bytes
    capped: bool  # stdout reached max_stdout and the command was stopped there


def _run(
    cmd: list[str],
    data: bytes | BinaryIO | None,
    timeout_s: float | None,
    *,
    max_stdout: int | None = None,
) -> _Result:
    """Run ``cmd`` with ``data`` on stdin (bytes, or a stream the command reads itself; or
    none), capturing stdout and stderr.

    stdin is written and both outputs drained by threads, so large inputs and chatty errors
    cannot deadlock on a full pipe. stdout is kept up to ``max_stdout`` bytes: at the cap the
    command is killed (the caller has all it asked for); stderr up to `MAX_STDERR` bytes (a
    damaged file can make ffmpeg write a line per frame). Past ``timeout_s`` the command is
    killed and `subprocess.TimeoutExpired` raised.
    """
    stdin: int | BinaryIO = (
        subprocess.DEVNULL if data is None else subprocess.PIPE if isinstance(data, bytes) else data
    )
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = bytearray()
    err = bytearray()
    capped = threading.Event()

    def feed() -> None:
        assert proc.stdin is not None and isinstance(data, bytes)
        # OSError: the command stopped reading (it failed, or was capped).
        with contextlib.suppress(OSError), proc.stdin:
            proc.stdin.write(data)

    def drain_out() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 1 << 20):
            if max_stdout is not None and len(out) + len(chunk) >= max_stdout:
                out.extend(chunk[: max_stdout - len(out)])
                capped.set()
                proc.kill()
                return
            out.extend(chunk)

    def drain_err() -> None:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        while chunk := os.read(fd, 1 << 16):
            if len(err) < MAX_STDERR:
                err.extend(chunk[: MAX_STDERR - len(err)])

    threads = [threading.Thread(target=drain_out), threading.Thread(target=drain_err)]
    if isinstance(data, bytes):
        threads.append(threading.Thread(target=feed))
    try:
        for t in threads:
            t.daemon = True
            t.start()
        try:
            returncode = proc.wait(timeout=timeout_s)
        except BaseException:  # the timeout, or an interrupt (a cancelled Dagster run)
            proc.kill()
            proc.wait()
            raise
        finally:
            for t in threads:
                t.join()
    finally:
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    return _Result(returncode, bytes(out), bytes(err), capped.is_set())


def _check_positive(name: str, value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, Real) or not float(value) > 0
    ):
        raise ParameterError(f"{name} must be a positive number of seconds, got {value!r}")


def _sample_limit(max_seconds: float | None, sample_rate: int) -> int | None:
    return None if max_seconds is None else max(1, round(max_seconds * sample_rate))


def _check_sample_rate(sample_rate: object) -> None:
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, Integral)
        or not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE
    ):
        raise ParameterError(
            f"sample_rate must be an integer number of Hz in {MIN_SAMPLE_RATE}-"
            f"{MAX_SAMPLE_RATE}, got {sample_rate!r}"
        )


def _resolve(source: object, label: str | None) -> _Input:
    """Classify ``source`` and run the checks that need no ffmpeg."""
    if not isinstance(source, str | bytes | bytearray | memoryview | os.PathLike) and hasattr(
        source, "fileno"
    ):
        return _Input("pipe:0", None, label or "<stream>", local=False, stream=source)  # type: ignore[arg-type]
    if isinstance(source, bytes | bytearray | memoryview):
        name = label or BYTES_LABEL
        data = source if isinstance(source, bytes) else bytes(source)
        if not data:
            raise DecodeError(name, "no data (0 bytes)")
        return _Input("pipe:0", data, name, local=False)
    if isinstance(source, str) and source[:8].lower().startswith(("http://", "https://")):
        return _Input(source, None, label or _without_credentials(source), local=False)
    if isinstance(source, str) and source[:5].lower() == "file:":
        # Made a path here so the up-front checks apply and %-escapes are undone
        # (ffmpeg's file protocol takes the rest of the string literally).
        parts = urllib.parse.urlsplit(source)
        name = label or source
        if parts.netloc not in ("", "localhost"):
            raise DecodeError(name, f"file URL on another host ({parts.netloc}) is not supported")
        # Imported here: urllib.request imports http and ssl, which a clip on disk never needs.
        from urllib.request import url2pathname

        path = url2pathname(parts.path)
    elif isinstance(source, str | os.PathLike):
        path = os.fsdecode(source)
        name = label or path
    else:
        raise ParameterError(
            f"source must be a path, a URL string or bytes, not {type(source).__name__}"
        )
    _check_file(path, name)
    # "file:" keeps ffmpeg from reading "-" as stdin or "a:b.mp3" as protocol "a".
    return _Input("file:" + path, None, name, local=True)


def _check_file(path: str, name: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError(name, "file not found") from None
    except NotADirectoryError:
        raise DecodeError(name, "file not found (a parent of it is not a directory)") from None
    except PermissionError:
        raise DecodeError(name, "permission denied") from None
    except OSError as exc:
        raise DecodeError(name, f"cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError(name, "is a directory, not a file")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise DecodeError(name, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise DecodeError(name, "permission denied (the file is not readable)")


def _without_credentials(url: str) -> str:
    """The URL with any user:password removed, so it can go into logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _not_installed(tool: str) -> str:
    return f"{tool} is not installed (not found on PATH): {INSTALL_HINT}"


def _require_tool(tool: str, name: str) -> str:
    # Looked up on every call, not cached at import: PATH may change after import.
    exe = shutil.which(tool)
    if exe is None:
        raise DecodeError(name, _not_installed(tool))
    return exe


def _messages(stderr: str, arg: str) -> list[str]:
    """ffmpeg's error lines without the ``[demuxer @ 0x..]`` and ``input:`` prefixes."""
    out: list[str] = []
    for raw in stderr.splitlines():
        line = _DEMUXER_LINE.sub("", raw.strip())
        line = line.removeprefix(f"{arg}: ").strip()
        if line and not line.startswith("Last message repeated") and line not in out:
            out.append(line if len(line) <= MAX_QUOTE else line[: MAX_QUOTE - 3] + "...")
    return out


def _first_message(stderr: str, arg: str) -> str:
    lines = _messages(stderr, arg)
    return lines[0] if lines else ""


def _failure_reason(src: _Input, returncode: int, stderr: str, timeout_s: float | None) -> str:
    """Plain words for why ffmpeg gave no samples, with ffmpeg's first message quoted."""
    first = _first_message(stderr, src.arg)
    said = f" (ffmpeg: {first})" if first else ""
    text = stderr.lower()
    if returncode < 0:
        return f"ffmpeg was killed by signal {-returncode}, perhaps for lack of memory{said}"
    if "does not contain any stream" in text or "matches no streams" in text:
        return _no_audio_reason(src, timeout_s) + said
    if returncode == 0:
        reason = "decoded to no audio samples (ffmpeg exited 0)"
        if not src.local and "partial file" in text:
            reason += (
                "; an MP4/MOV whose index (moov atom) follows the audio cannot be read from a"
                " stream: pass a local file, or remux it with"
                " `ffmpeg -i IN -c copy -movflags +faststart OUT`"
            )
        return reason + said
    fetched = not src.local and src.data is None and src.stream is None
    if fetched and any(e in text for e in _NETWORK_ERRORS):
        return f"could not be fetched{said}"
    # The file changed between the up-front checks and ffmpeg opening it.
    if "no such file or directory" in text:
        return f"file not found{said}"
    if "permission denied" in text:
        return f"permission denied{said}"
    # A demuxer picked by the file's extension fails on an HTML error page or a note saved
    # under an audio name (what a failed download leaves behind): say so instead of "corrupt".
    if _looks_like_text(_head(src)):
        return f"not an audio file: it looks like text{said}"
    # A bare "Invalid data" means no demuxer recognised the input at all; a demuxer that
    # did recognise it and then failed (say "moov atom not found") signals a damaged file.
    recognised = any(_DEMUXER_LINE.match(line.strip()) for line in stderr.splitlines())
    if "invalid data found when processing input" in text and not recognised:
        return f"not an audio file: no format ffmpeg knows{said}"
    return f"truncated or corrupt{said}"


def _head(src: _Input, size: int = 1024) -> bytes:
    """The input's first bytes, where they can be had without fetching anything."""
    if src.data is not None:
        return src.data[:size]
    if not src.local:
        return b""
    try:
        with open(src.arg.removeprefix("file:"), "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _looks_like_text(head: bytes) -> bool:
    """True for UTF-8 text with no control bytes beyond whitespace (no audio format is)."""
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)


def _no_audio_reason(src: _Input, timeout_s: float | None) -> str:
    """Tell an image or text file from a video without sound, asking ffprobe."""
    streams, fmt = _probe(src, timeout_s)
    codecs = sorted({s.get("codec_name") or "unknown" for s in streams})
    if fmt == "tty" or (codecs and set(codecs) <= _TEXT_CODECS):
        return "not an audio file: it looks like text"
    if streams and (fmt == "image2" or fmt.endswith("_pipe") or set(codecs) <= _IMAGE_CODECS):
        return f"not an audio file: it is an image ({', '.join(codecs)})"
    if streams:
        kinds = ", ".join(
            sorted(
                {f"{s.get('codec_type', 'unknown')} ({s.get('codec_name', '?')})" for s in streams}
            )
        )
        return f"has no audio stream, only {kinds}"
    return "not an audio file: it has no audio stream"


def _probe(src: _Input, timeout_s: float | None) -> tuple[list[dict[str, str]], str]:
    """Streams and format name by ffprobe, or nothing when it is absent or fails."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return [], ""
    cmd = [
        ffprobe,
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type,codec_name:format=format_name",
        "-of",
        "json",
        src.arg,
    ]
    try:
        proc = _run(cmd, src.data, min(timeout_s or PROBE_TIMEOUT_S, PROBE_TIMEOUT_S))
        info = json.loads(proc.stdout or b"{}")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        # Only the wording of an error is at stake: fall back to the generic one.
        return [], ""
    return list(info.get("streams", [])), str(info.get("format", {}).get("format_name", ""))
