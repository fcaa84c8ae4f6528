"""The embedder: which sentence-embedding model the segment_embeddings asset uses."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from ..snapshot.quantization import QUANTIZATIONS
from ..transcripts.embedder import Embedder, load_embedder


class EmbedderResource(dg.ConfigurableResource):
    """Sentence embeddings of transcript segments (sentence-transformers): the packaged
    all-MiniLM-L6-v2 on the CPU by default, a configured model folder on GPU workers. The model
    loads once per process and stays loaded between steps; a query server must load the same
    model (``citywok search --model``)."""

    model_path: str | None = Field(
        default=None,
        description="A sentence-transformers model folder (env CITYWOK_EMBEDDING_MODEL_PATH); "
        "default: the packaged all-MiniLM-L6-v2. Never downloaded at run time.",
    )
    device: str = Field(default="auto", description="auto (cuda when a GPU is seen), cpu or cuda.")
    batch_size: int = Field(default=64, description="Segments embedded per batch.")
    quantization: str = Field(
        default="float16",
        description=f"How vectors are stored: {' or '.join(QUANTIZATIONS)} "
        "(int8: a quarter of float32's bytes, with a scale per vector).",
    )

    def load(self) -> Embedder:
        """The loaded model (cached per process and configuration)."""
        return load_embedder(
            self.model_path or None, device=self.device, batch_size=self.batch_size
        )
