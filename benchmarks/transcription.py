"""Transcription speed and word error on this CPU: faster-whisper, the packaged tiny.en, int8.

    python -m benchmarks.transcription [--threads 2] [--seconds 60]

Speech is espeak-ng reading a fixed text slowly (``-s 120``), so runs are comparable across
machines; the word error is against that text. Figures: model load, times realtime (audio
seconds per second of work; the real-time factor is its inverse) for greedy and beam-5
decoding, silence throughput (the VAD skips it), and the word error rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.transcripts import transcriber as tx

PARAGRAPHS = (
    "The lighthouse keeper walked along the stone wall every evening before dark.",
    "He carried a lantern and a basket of fresh bread for the fishermen.",
    "The fishing boats came home before the storm, one after another.",
    "In the kitchen the cook was chopping onions and singing an old song.",
    "Nobody knew where the captain had hidden the key to the cellar.",
    "A small dog barked at the gulls that circled over the market square.",
    "The teacher asked the children to write a story about the sea.",
    "On Sunday morning the whole village gathered in front of the church.",
    "The baker said that the price of flour had doubled since the winter.",
    "They waited at the station for the last train, but it never came.",
    "Her brother repaired the roof while the rain was still falling.",
    "At night the harbor lights were reflected in the calm black water.",
)


def speak(text: str, path: Path, *, speed: int = 120) -> np.ndarray:
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True)
    return decode(path, sample_rate=tx.SAMPLE_RATE)


def speech_of(seconds: float, work: Path) -> tuple[np.ndarray, str]:
    """At least ``seconds`` of slow espeak-ng speech and the text it reads."""
    text, samples = "", np.zeros(0, np.float32)
    while samples.size < seconds * tx.SAMPLE_RATE:
        text = " ".join(filter(None, [text, *PARAGRAPHS]))
        samples = speak(text, work / "speech.wav")
    return samples, text


def timed(t: tx.Transcriber, samples: np.ndarray, *, repeats: int = 2) -> tuple[float, Any]:
    """The best of ``repeats`` wall-clock times (the machine may be shared) and the result."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = t.transcribe(samples)
        best = min(best, time.perf_counter() - started)
    return best, result


def run(*, threads: int = 2, seconds: float = 60.0) -> dict[str, Any]:
    """Measure; returns the figures as a dict (also what ``__main__`` prints)."""
    with tempfile.TemporaryDirectory() as tmp:
        samples, text = speech_of(seconds, Path(tmp))
    duration = samples.size / tx.SAMPLE_RATE

    started = time.perf_counter()
    import faster_whisper  # noqa: F401 (timed: a worker pays it once)

    import_s = time.perf_counter() - started
    tx.clear_cache()
    started = time.perf_counter()
    greedy = tx.load_transcriber(
        backend="faster-whisper", device="cpu", threads=threads, beam_size=1
    )
    load_s = time.perf_counter() - started
    beam = tx.load_transcriber(backend="faster-whisper", device="cpu", threads=threads, beam_size=5)

    timed(greedy, samples[: 5 * tx.SAMPLE_RATE], repeats=1)  # warm-up: first-call allocations
    greedy_s, greedy_result = timed(greedy, samples)
    beam_s, beam_result = timed(beam, samples)
    silence_s, _ = timed(beam, np.zeros(int(duration * tx.SAMPLE_RATE), np.float32))
    return {
        "model": greedy.model,
        "backend": greedy.backend,
        "compute_type": greedy.compute_type,
        "threads": threads,
        "cores_available": len(os.sched_getaffinity(0)),
        "audio_s": round(duration, 1),
        "import_s": round(import_s, 2),
        "model_load_s": round(load_s, 2),
        "greedy": _figures(greedy_s, duration, greedy_result, text),
        "beam5": _figures(beam_s, duration, beam_result, text),
        "silence_x_realtime": round(duration / silence_s, 1),
    }


def _figures(elapsed: float, duration: float, result: Any, text: str) -> dict[str, Any]:
    return {
        "seconds": round(elapsed, 2),
        "x_realtime": round(duration / elapsed, 1),
        "real_time_factor": round(elapsed / duration, 3),
        "word_error_rate": round(tx.word_error_rate(text, result.text), 3),
        "segments": len(result.segments),
        "words": result.word_count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--seconds", type=float, default=60.0, help="speech length (default 60)")
    args = parser.parse_args(argv)
    figures = run(threads=args.threads, seconds=args.seconds)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
