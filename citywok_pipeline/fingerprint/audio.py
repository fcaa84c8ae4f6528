"""Decode media to mono float32 PCM with ffmpeg, piped to memory.

Any container ffmpeg reads (mp3, mp4, mkv, m4a, opus, flac, wav, webm, ...) from a local
path, an http(s)/file URL or raw bytes. ffmpeg runs once per call with its output piped
back, so there are no temporary files and no ffprobe on the hot path: ffprobe runs only
after a failure, to say more precisely why.

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
import shutil
import stat
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from subprocess import CompletedProcess

import numpy as np

from .params import ParameterError

__all__ = ["DecodeError", "decode", "decode_bytes", "duration_s"]

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


@dataclass(frozen=True)
class _Input:
    """What ffmpeg is given: its ``-i`` argument, bytes for stdin, and the name for errors."""

    arg: str
    data: bytes | None
    label: str
    local: bool


def decode(
    source: str | os.PathLike[str] | bytes,
    *,
    sample_rate: int = 8000,
    label: str | None = None,
    timeout_s: float | None = None,
) -> np.ndarray:
    """Decode a media file, URL or byte string to mono float32 PCM.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A filesystem path; an ``http://``, ``https://`` or ``file://`` URL string; or the
        file's raw bytes (``bytes``, ``bytearray`` or ``memoryview``), fed to ffmpeg's stdin.
    sample_rate : int
        Output rate in Hz, 1 kHz to 768 kHz.
    label : str, optional
        Name used in error messages instead of the path or URL (for bytes the default
        is ``'<bytes>'``): useful for uploads and standard input.
    timeout_s : float, optional
        Give up after this many seconds of wall-clock time. Default: no limit.

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
        ``sample_rate``, ``timeout_s`` or the type of ``source`` is invalid.

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
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, Real) or not timeout_s > 0
    ):
        raise ParameterError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    src = _resolve(source, label)
    ffmpeg = _require_tool("ffmpeg", src.label)
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
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
        "-f",
        "f32le",
        "pipe:1",
    ]
    try:
        proc = _run(cmd, src.data, timeout_s)
    except FileNotFoundError:
        raise DecodeError(src.label, _not_installed("ffmpeg")) from None
    except subprocess.TimeoutExpired:
        raise DecodeError(src.label, f"decoding timed out after {timeout_s:g} s") from None

    n = len(proc.stdout) // 4
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == 0 and n > 0:
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


def decode_bytes(
    data: bytes,
    *,
    sample_rate: int = 8000,
    label: str | None = None,
    suffix: str = "",
    max_seconds: float | None = None,
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
        Stop after this much audio: the result is the first ``max_seconds`` seconds.
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
        to the ffmpeg command, which decodes it or says why not.
    ParameterError
        ``sample_rate`` or ``max_seconds`` is invalid.
    """
    _check_sample_rate(sample_rate)
    if max_seconds is not None and (
        isinstance(max_seconds, bool) or not isinstance(max_seconds, Real) or not max_seconds > 0
    ):
        raise ParameterError(f"max_seconds must be a positive number, got {max_seconds!r}")
    name = label or BYTES_LABEL
    if not data:
        raise DecodeError(name, "no data (0 bytes)")
    limit = None if max_seconds is None else round(max_seconds * sample_rate)
    with _upload_file(data, _safe_suffix(suffix)) as path:
        if in_process:
            try:
                samples = _pyav_decode(path, int(sample_rate), limit)
            except Exception as exc:  # any libav failure: ffmpeg says precisely why
                logger.debug("%s: PyAV could not decode it (%s); trying ffmpeg", name, exc)
                samples = None
            if samples is not None and samples.size:  # nothing decoded: ffmpeg says why
                return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
        out = decode(path, sample_rate=sample_rate, label=name)
    return out if limit is None else out[:limit]


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


def _pyav_decode(path: str, sample_rate: int, limit: int | None) -> np.ndarray:
    """Decode with libav in this process: one filter graph reads the file (``amovie``: the
    demuxer and decoder ``decode``'s ffmpeg command uses), then converts it through the
    filters that command uses, all inside libav. Raises on what libav cannot read, or when
    there is no audio stream (the caller asks the ffmpeg command, which says why)."""
    import av  # PyAV: libav in-process; a dependency of faster-whisper too

    graph = av.filter.Graph()
    chain = [
        graph.add("amovie", filename=path),
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


def _run(cmd: list[str], data: bytes | None, timeout_s: float | None) -> CompletedProcess[bytes]:
    """Run ``cmd`` with ``data`` on stdin (or none), capturing stdout and stderr.

    communicate() (inside run) writes stdin while draining stdout and stderr, so large
    inputs and chatty errors cannot deadlock on a full pipe; on timeout it kills ffmpeg.
    """
    if data is None:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout_s, check=False)


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
        path = urllib.request.url2pathname(parts.path)
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
    if not src.local and src.data is None and any(e in text for e in _NETWORK_ERRORS):
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
