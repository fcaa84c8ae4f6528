"""The transcriber: which speech-to-text backend and model the transcript asset uses."""

from __future__ import annotations

import dagster as dg
import numpy as np
from pydantic import Field

from ..transcripts import Transcript
from ..transcripts.transcriber import Transcriber, load_transcriber


class TranscriberResource(dg.ConfigurableResource):
    """Speech to text: faster-whisper on the CPU (the packaged tiny.en by default), whisperx
    on a GPU. The model loads once per process and stays loaded between steps."""

    backend: str = Field(
        default="auto",
        description="auto, faster-whisper or whisperx (env CITYWOK_ASR_BACKEND). auto: whisperx "
        "on a CUDA GPU with whisperx installed and an alignment model configured, else faster-whisper.",
    )
    model_path: str | None = Field(
        default=None,
        description="A CTranslate2 Whisper model directory (env CITYWOK_ASR_MODEL_PATH); "
        "default: the packaged tiny.en. Never downloaded at run time.",
    )
    device: str = Field(default="auto", description="auto, cpu or cuda.")
    compute_type: str | None = Field(
        default=None,
        description="CTranslate2 compute type; default int8 on the CPU, float16 on CUDA.",
    )
    threads: int | None = Field(default=None, description="CPU threads; default one per core.")
    batch_size: int = Field(default=16, description="whisperx batch size.")
    beam_size: int = Field(default=5, description="faster-whisper beam width (1: greedy).")
    language: str | None = Field(
        default=None, description="Language code; default detected (English for .en models)."
    )
    align_model_path: str | None = Field(
        default=None,
        description="whisperx only: a local wav2vec2 alignment model directory "
        "(env CITYWOK_ASR_ALIGN_MODEL_PATH); whisperx needs one.",
    )
    diarize_token: str | None = Field(
        default=None,
        description="whisperx only: Hugging Face token for speaker diarization (env CITYWOK_HF_TOKEN).",
    )

    def load(self) -> Transcriber:
        """The loaded transcriber (cached per process and configuration)."""
        return load_transcriber(
            backend=self.backend,
            model_path=self.model_path or None,
            device=self.device,
            compute_type=self.compute_type or None,
            threads=self.threads,
            batch_size=self.batch_size,
            beam_size=self.beam_size,
            language=self.language or None,
            align_model_path=self.align_model_path or None,
            diarize_token=self.diarize_token or None,
        )

    def transcribe(self, samples: np.ndarray, *, label: str = "audio") -> Transcript:
        return self.load().transcribe(samples, label=label)
