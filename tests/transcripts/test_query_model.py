"""The numpy query runtime gives sentence-transformers' vectors on the packaged model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.transcripts import ModelNotFoundError
from citywok_pipeline.transcripts.embedder import (
    load_embedder,
    load_query_embedder,
    packaged_model_path,
)
from citywok_pipeline.transcripts.query_model import NumpyBert, load_weights, supported

# Short and long, punctuation, digits, accents, another script, an empty string, and one
# longer than the model's 256 tokens (truncated the same way by both).
TEXTS = [
    "Where did you put the ladder?",
    "Maya borrowed the old bicycle last summer, and nobody noticed.",
    "OK.",
    "",
    "The 3:45 train to Zürich leaves from platform 9¾ — café au lait, s'il vous plaît!",
    "東京の天気はどうですか",
    "Honestly, I never wanted to fix that crooked lantern. " * 40,
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return load_embedder(device="cpu").embed(TEXTS)


def test_numpy_runtime_gives_sentence_transformers_vectors(reference: np.ndarray) -> None:
    light = load_query_embedder()
    assert light.device == "cpu"
    assert isinstance(light._model, NumpyBert)
    vectors = light.embed(TEXTS)
    assert vectors.shape == reference.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 1 - 1e-3, cosines
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The same model name and dimension: a snapshot embedded by one is searched by the other.
    heavy = load_embedder(device="cpu")
    assert (light.model_name, light.dim) == (heavy.model_name, heavy.dim)


def test_a_batch_gives_each_text_the_vector_it_gets_alone() -> None:
    light = load_query_embedder()
    together = light.embed(TEXTS[:3])
    alone = np.stack([light.embed([t])[0] for t in TEXTS[:3]])
    assert np.allclose(together, alone, atol=1e-5)


def _copy_model(tmp_path: Path) -> Path:
    """A copy of the packaged folder whose large files are links to the originals."""
    src = packaged_model_path()
    dst = tmp_path / "model"
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("*.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_a_model_it_cannot_run_is_named_with_the_reason_and_left_to_sentence_transformers(
    tmp_path: Path,
) -> None:
    model = _copy_model(tmp_path)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    pooling.write_text(json.dumps(config))
    assert "pooling" in (supported(model) or "")
    with pytest.raises(ValueError, match="pooling"):
        NumpyBert(model)
    embedder = load_query_embedder(model)
    assert not isinstance(embedder._model, NumpyBert)
    assert embedder.embed(["a ladder"]).shape == (1, 384)


def test_a_folder_without_weights_is_refused_clearly(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    (model / "model.safetensors").unlink()
    assert supported(model) == "no model.safetensors"
    with pytest.raises(ModelNotFoundError):
        load_query_embedder(tmp_path / "missing")


def test_the_weights_viewed_in_the_map_are_safetensors_own() -> None:
    from safetensors.numpy import load_file

    path = packaged_model_path() / "model.safetensors"
    viewed, read = load_weights(path), load_file(str(path))
    assert viewed.keys() == read.keys()
    for name, array in read.items():
        assert viewed[name].dtype == array.dtype and np.array_equal(viewed[name], array), name
        assert not viewed[name].flags.writeable  # a view of the read-only map, not a copy


def test_a_truncated_weights_file_is_refused_with_its_name(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor .* does not fit"):
        NumpyBert(model)
