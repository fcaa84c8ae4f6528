"""A sentence-transformers BERT model run in numpy: the query side of transcript search.

``import sentence_transformers`` alone takes seconds (transformers' import machinery, torch),
which a one-shot ``citywok search`` pays for embedding one sentence. A BERT encoder with mean
or CLS pooling is small enough to run directly: the tokenizer from the model's own
``tokenizer.json`` through ``tokenizers`` (the Rust library sentence-transformers uses too),
the weights memory-mapped from its ``model.safetensors`` (arrays viewed in the map, never
copied: a one-shot search touches only the rows of the vocabulary it uses), and the
six (or twelve) layers as a few numpy matrix products. The vectors agree with
sentence-transformers' to float32 rounding (tests/transcripts/test_query_model.py checks the
packaged all-MiniLM-L6-v2 to within 1e-5 cosine); the pipeline's bulk embedding keeps
sentence-transformers (batched, on a GPU where there is one).

Only what sentence-transformers would build from the folder is accepted
(:func:`supported` says why not otherwise): modules Transformer, Pooling (mean or CLS), and
optionally Normalize; a ``BertModel`` with absolute positions and GELU.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class _Layout:
    """What a model folder holds, read from its JSON files."""

    config: dict[str, Any]
    pooling: str  # "mean" or "cls"
    normalize: bool
    max_seq_length: int
    lower_case: bool


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _layout(path: Path) -> _Layout | str:
    """The folder's layout, or why this module cannot run it."""
    try:
        modules = _read_json(path / "modules.json")
        config = _read_json(path / "config.json")
    except (OSError, ValueError) as exc:
        return f"no readable modules.json and config.json ({exc})"
    types = [m.get("type") for m in modules] if isinstance(modules, list) else []
    if types not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]):
        return f"modules {types} are not Transformer, Pooling[, Normalize]"
    if modules[0].get("path") not in ("", None):
        return "the transformer is not at the folder's root"
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        return (
            f"not a BERT encoder with GELU ({config.get('model_type')}, {config.get('hidden_act')})"
        )
    if config.get("position_embedding_type", "absolute") != "absolute":
        return "positions are not absolute"
    for name in ("model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            return f"no {name}"
    try:
        pooling = _read_json(path / modules[1]["path"] / "config.json")
        st_config = _read_json(path / "sentence_bert_config.json")
    except (OSError, ValueError, KeyError) as exc:
        return f"no readable pooling or sentence_bert_config.json ({exc})"
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    if modes == {"pooling_mode_mean_tokens"}:
        mode = "mean"
    elif modes == {"pooling_mode_cls_token"}:
        mode = "cls"
    else:
        return f"pooling {sorted(modes)} is neither mean nor CLS alone"
    if pooling.get("include_prompt", True) is not True:
        return "pooling leaves the prompt out"
    positions = int(config.get("max_position_embeddings", 512))
    return _Layout(
        config=config,
        pooling=mode,
        normalize=len(types) == 3,
        max_seq_length=min(int(st_config.get("max_seq_length") or positions), positions),
        lower_case=bool(st_config.get("do_lower_case", False)),
    )


def supported(path: str | Path) -> str | None:
    """None when the folder can run here, else the reason it cannot."""
    layout = _layout(Path(path))
    return layout if isinstance(layout, str) else None


# safetensors' dtypes that numpy has (BF16 has none: such a file is read by safetensors).
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}  # fmt: skip


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as read-only arrays viewed in its memory map.

    The format is an 8-byte little-endian header length, a JSON header naming each tensor's
    dtype, shape and byte range, then the data. ``safetensors.numpy.load_file`` reads and
    copies all of it (90 MB for MiniLM: a quarter of a second on a busy machine), where a
    query needs the weights of the layers and a few rows of the vocabulary. A file of a dtype
    numpy lacks (bfloat16) is read by safetensors.
    """
    with open(path, "rb") as f:
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        (size,) = struct.unpack_from("<Q", buffer, 0)
        header = json.loads(buffer[8 : 8 + size])
    except (struct.error, ValueError) as exc:
        raise ValueError(f"{path}: not a safetensors file ({exc})") from exc
    start = 8 + size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            from safetensors.numpy import load_file

            return load_file(str(path))  # type: ignore[no-any-return]
        lo, hi = (int(v) for v in info["data_offsets"])
        shape = tuple(int(d) for d in info["shape"])
        count = math.prod(shape)
        if hi - lo != count * np.dtype(dtype).itemsize or start + hi > len(buffer):
            raise ValueError(f"{path}: tensor {name} does not fit its byte range")
        out[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=start + lo).reshape(
            shape
        )
    return out


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias  # type: ignore[no-any-return]


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 1.2e-7 everywhere (Numerical Recipes' erfc Chebyshev fit): numpy has
    none, and scipy.special costs a quarter of a second to import."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))))  # fmt: skip
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype)  # type: ignore[no-any-return]


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))  # type: ignore[no-any-return]


class NumpyBert:
    """A loaded model; :meth:`encode` answers like ``SentenceTransformer.encode``."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        layout = _layout(path)
        if isinstance(layout, str):
            raise ValueError(f"{path}: {layout}")
        self.layout = layout
        cfg = layout.config
        self.dim = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        weights = load_weights(path / "model.safetensors")
        # Some exports keep BertModel's "bert." prefix, others drop it.
        self.w = {k.removeprefix("bert."): v for k, v in weights.items()}
        for key in ("embeddings.word_embeddings.weight", f"encoder.layer.{self.layers - 1}.output.dense.weight"):  # fmt: skip
            if key not in self.w:
                raise ValueError(f"{path}: model.safetensors has no {key}")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # sentence-transformers pads a batch to its longest text and truncates at
        # max_seq_length, whatever tokenizer.json says.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=layout.max_seq_length)
        self.tokenizer = tokenizer

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token states, shape (batch, length, dim), float32."""
        w, eps = self.w, self.eps
        batch, length = ids.shape
        head = self.dim // self.heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        # Rows of (batch x length, dim): 2-D products are what BLAS does fastest.
        x = x.reshape(batch * length, self.dim)
        # Padding is masked with float32's most negative value, as transformers does.
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(
            np.float32
        )
        scale = np.float32(1.0 / math.sqrt(head))
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def dense(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]  # type: ignore[no-any-return]

            def split(h: np.ndarray) -> np.ndarray:  # (batch, heads, length, head)
                return h.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.dim)
            x = _layer_norm(
                x + dense(context, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                eps,
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                x + dense(hidden, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                eps,
            )
        return x.reshape(batch, length, self.dim)

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        **_: Any,
    ) -> np.ndarray:
        """Sentence vectors, shape (len(texts), dim), float32 (``SentenceTransformer.encode``'s
        keywords; the others are accepted and ignored)."""
        texts = [t.lower() for t in texts] if self.layout.lower_case else list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        # Similar lengths together, as sentence-transformers batches: less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for lo in range(0, len(order), max(1, batch_size)):
            chunk = order[lo : lo + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in chunk])
            length = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(chunk), length), np.int64)
            mask = np.zeros((len(chunk), length), np.float32)
            for row, e in enumerate(encodings):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1.0
            # One query is too small to share between threads: BLAS threads only wait on
            # each other (a 384 x 384 product took 4x longer with two than with one).
            with threadpool_limits(1, user_api="blas"):
                states = self._forward(ids, mask)
            if self.layout.pooling == "cls":
                pooled = states[:, 0]
            else:
                summed = (states * mask[:, :, None]).sum(axis=1)
                pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            if self.layout.normalize or normalize_embeddings:
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                pooled = pooled / np.maximum(norms, 1e-12)
            out[chunk] = pooled
        return out
