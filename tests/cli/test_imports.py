"""One-shot commands stay light: what `citywok match` and `citywok search` import.

A new top-level import anywhere on a command's path (torch, sentence-transformers, Dagster,
scipy.special) costs every run of it up to seconds; these tests name the module that came
in. How long the commands take is measured in benchmarks/cli_start.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS, fingerprint
from citywok_pipeline.fingerprint.records import Episode
from citywok_pipeline.snapshot import write_shard
from citywok_pipeline.snapshot.quantization import quantize
from citywok_pipeline.snapshot.segments import SegmentTable
from citywok_pipeline.transcripts.embedder import load_query_embedder
from tests.conftest import tone_music

HEAVY = ("torch", "sentence_transformers", "transformers", "dagster", "scipy.special")

# Runs the CLI in this interpreter, then prints the modules it imported as the last line.
_PROBE = """
import json, sys
sys.argv = ["citywok", *json.loads(sys.argv[1])]
try:
    from citywok_pipeline.cli import main
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*args: str) -> tuple[int, list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return last["code"], last["modules"], proc.stdout + proc.stderr


def heavy_in(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-episode snapshot with fingerprints and two segments, and a clip of it."""
    root = tmp_path_factory.mktemp("light")
    music = tone_music(20.0, seed=5)
    embedder = load_query_embedder()
    texts = ["Where did you put the ladder?", "The kettle is in the garden."]
    table = SegmentTable(
        np.zeros(2, np.uint32),
        np.array([1.0, 6.0], np.float32),
        np.array([3.0, 8.0], np.float32),
        texts,
        quantize(embedder.embed(texts)),
        embedder.model_name,
    )
    write_shard(
        root / "snap" / "show-s01.lmdb",
        season="show-s01",
        episodes=[Episode(episode_id="show-s01e01", season="show-s01", duration_s=20.0)],
        hashes=[fingerprint(music, params=DEFAULT_PARAMS)],
        params=DEFAULT_PARAMS,
        segments=table,
    )
    clip = root / "clip.wav"
    with wave.open(str(clip), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(DEFAULT_PARAMS.sample_rate)
        part = music[4 * DEFAULT_PARAMS.sample_rate : 10 * DEFAULT_PARAMS.sample_rate]
        f.writeframes((np.clip(part, -1, 1) * 32767).astype("<i2").tobytes())
    return root / "snap", clip


def test_importing_the_cli_imports_nothing_heavy() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import json, sys, citywok_pipeline.cli; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    modules = json.loads(proc.stdout)
    assert heavy_in(modules) == []
    assert "numpy" not in modules, "the CLI module should not need numpy to show --help"


def test_match_imports_neither_torch_nor_scipy_special(snapshot: tuple[Path, Path]) -> None:
    snap, clip = snapshot
    code, modules, output = imported_by("match", str(snap), str(clip), "--json")
    assert code == 0, output
    assert '"episode_id": "show-s01e01"' in output
    assert heavy_in(modules) == []
    # Nor the publisher (a plain snapshot opens without it) or an HTTP client (a clip on disk).
    assert [m for m in modules if m.startswith(("citywok_pipeline.publishing", "http."))] == []


def test_search_imports_neither_torch_nor_sentence_transformers(
    snapshot: tuple[Path, Path],
) -> None:
    snap, _ = snapshot
    code, modules, output = imported_by("search", str(snap), "where is the ladder", "--json")
    assert code == 0, output
    assert "Where did you put the ladder?" in output.splitlines()[0]
    assert heavy_in(modules) == []
