"""Fuzzing of what is read back from disk and buckets: random bytes, and random mutations of
real files, give a clear error (the format's own exception, naming the input), never another
exception, a crash or a hang."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citywok_pipeline.publishing import Manifest, ManifestError
from citywok_pipeline.publishing.versions import SHARD_FILE_RE, VERSION_RE

from .conftest import FUZZ, FaultFigures

VALID_MANIFEST: dict[str, Any] = {
    "format": "citywok-manifest", "format_version": 1,
    "version": "v20261122T101500123456Z-1a2b3c4d", "created_at": "2026-11-22T10:15:00Z",
    "previous": None, "code_version": {"package": "0.1.0"}, "params": {"version": 1},
    "embedding": None,
    "shards": [{
        "file": "show-s01.lmdb", "season": "show-s01", "sha256": "ab" * 32, "size": 10,
        "episodes": 2, "postings": 5, "segments": 0, "hours": 0.5, "built_at": "",
        "videos": {}, "data_version": None,
    }],
}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def _parse(data: bytes, figures: FaultFigures) -> Manifest | None:
    figures.tally("fuzzing", "manifest parser", examples=1)
    try:
        return Manifest.from_json(data, label="fuzzed.json")
    except ManifestError as exc:
        assert str(exc).startswith("fuzzed.json: not a usable manifest (")
        return None


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_never_anything_but_a_manifest_error(
    data: bytes, fault_figures: FaultFigures
) -> None:
    assert _parse(data, fault_figures) is None


@pytest.mark.timeout(300)
@FUZZ
@given(
    path=st.lists(st.sampled_from(["shards", 0, "file", "sha256", "size", "version", "params",
                                   "hours", "videos", "key", "previous", "format_version"]),
                  min_size=1, max_size=3),
    value=json_values,
)  # fmt: skip
def test_a_manifest_with_any_field_replaced_parses_or_is_refused_with_a_manifest_error(
    path: list[Any], value: Any, fault_figures: FaultFigures
) -> None:
    doc: Any = json.loads(json.dumps(VALID_MANIFEST))
    node = doc
    for step in path[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        return
    manifest = _parse(json.dumps(doc).encode(), fault_figures)
    if manifest is not None:  # whatever got through is of the shapes the format defines
        assert VERSION_RE.fullmatch(manifest.version)
        for shard in manifest.shards:
            assert SHARD_FILE_RE.fullmatch(shard.file) and "/" not in shard.file
            assert shard.size >= 0 and len(shard.sha256) == 64
