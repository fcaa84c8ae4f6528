"""The library graph: one HNSW graph over every shard's segments, used only while it fits them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.snapshot import Snapshot
from citywok_pipeline.snapshot.library_graph import (
    GRAPH_FILE,
    INDEX_FILE,
    LIBRARY_PARAMS,
    build_library_graph,
    library_graph_current,
    verify_library_graph,
)
from citywok_pipeline.snapshot.segments import AnnParams
from citywok_pipeline.transcripts.search import SegmentSearcher
from tests.snapshot.test_segments import DIM, clustered, exact_top, unit, write

SIZES = {"show-s01": 3000, "show-s02": 2000, "show-s03": 1000}


@pytest.fixture
def library(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """Three shards of clustered vectors and their library graph."""
    vectors = {season: clustered(rng, n) for season, n in SIZES.items()}
    for season, v in vectors.items():
        write(tmp_path / f"{season}.lmdb", v, season=season)
    with Snapshot.open(tmp_path) as snap:
        info = build_library_graph(snap, min_segments=1, threads=1)
    assert info is not None and info["n"] == sum(SIZES.values())
    return tmp_path, vectors


def truth_of(vectors: dict[str, np.ndarray], q: np.ndarray) -> set[tuple[str, int]]:
    seasons = [s for s, v in vectors.items() for _ in range(len(v))]
    rows = [i for v in vectors.values() for i in range(len(v))]
    everything = np.concatenate(list(vectors.values()))
    return {(seasons[i], rows[i]) for i in exact_top(everything, q, 10)}


def _queries(vectors: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """40 queries near the library's vectors."""
    everything = np.concatenate(list(vectors.values()))
    return unit(everything[rng.choice(len(everything), 40)] + 0.05 * rng.standard_normal((40, DIM)))


def found_ids(searcher: SegmentSearcher, found: list[tuple[int, int, float]]) -> set:
    # The test rows have start = 2 s x their number in the table (write() in test_segments).
    return {(h.extra["season"], round(h.start_s / 2.0)) for h in searcher.hits(found)}


def test_the_library_graph_answers_one_search_for_every_shard_with_recall(
    library: tuple[Path, dict[str, np.ndarray]], rng: np.random.Generator
) -> None:
    path, vectors = library
    queries = _queries(vectors, rng)
    with Snapshot.open(path) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.library is not None and searcher.notes == []
        assert library_graph_current(snap)
        recalls = []
        for q in queries:
            found = searcher.search_vector(q, limit=10)
            scores = [s for _, _, s in found]
            assert len(found) == 10 and scores == sorted(scores, reverse=True)
            # Scored exactly against the stored vectors, whichever shard a row is in.
            for part, row, score in found:
                stored = searcher._parts[part].segments.vectors_of(np.array([row]))[0]
                assert score == pytest.approx(float(stored @ q), abs=1e-6)
            recalls.append(len(found_ids(searcher, found) & truth_of(vectors, q)) / 10)
    assert np.mean(recalls) >= 0.95


def test_a_changed_shard_makes_the_library_graph_stale_and_search_goes_on_per_shard(
    library: tuple[Path, dict[str, np.ndarray]], rng: np.random.Generator
) -> None:
    path, vectors = library
    vectors["show-s02"] = clustered(rng, SIZES["show-s02"])
    write(path / "show-s02.lmdb", vectors["show-s02"], season="show-s02")
    q = vectors["show-s02"][17]
    with Snapshot.open(path) as snap:
        assert not library_graph_current(snap)
        searcher = SegmentSearcher(snap)
        assert searcher.library is None
        assert any(
            "no longer fits the shards" in n and "citywok index" in n for n in searcher.notes
        )
        found = searcher.search_vector(q, limit=10)
        assert ("show-s02", 17) in found_ids(searcher, found)
        # Rebuilt, it fits again.
        assert build_library_graph(snap, min_segments=1, threads=1) is not None
    with Snapshot.open(path) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.library is not None and searcher.notes == []
        assert ("show-s02", 17) in found_ids(searcher, searcher.search_vector(q, limit=10))


def test_a_library_graph_of_older_parameters_still_answers_but_is_due_for_a_rebuild(
    library: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, vectors = library
    older = AnnParams(connectivity=16, expansion_add=64)
    assert older.to_dict() != LIBRARY_PARAMS.to_dict()
    with Snapshot.open(path) as snap:
        assert build_library_graph(snap, params=older, min_segments=1, threads=1) is not None
        assert not library_graph_current(snap)
        assert library_graph_current(snap, params=older)
        assert any("other parameters" in p for p in verify_library_graph(snap))
        searcher = SegmentSearcher(snap)
        assert searcher.library is not None and searcher.notes == []
        found = searcher.search_vector(vectors["show-s03"][9], limit=10)
        assert ("show-s03", 9) in found_ids(searcher, found)


def test_a_damaged_library_graph_is_refused_by_its_checksum_not_read(
    library: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, vectors = library
    graph = path / GRAPH_FILE
    data = bytearray(graph.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    graph.write_bytes(bytes(data))
    with Snapshot.open(path) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.library is None
        assert any("checksum mismatch" in n for n in searcher.notes)
        found = searcher.search_vector(vectors["show-s01"][5], limit=10)
        assert ("show-s01", 5) in found_ids(searcher, found)


def test_a_library_too_small_for_a_graph_gets_none_and_loses_an_old_one(
    library: tuple[Path, dict[str, np.ndarray]],
) -> None:
    path, _ = library
    with Snapshot.open(path) as snap:
        assert build_library_graph(snap, min_segments=10_000) is None
        assert not (path / GRAPH_FILE).exists() and not (path / INDEX_FILE).exists()
        searcher = SegmentSearcher(snap)
        assert searcher.library is None and searcher.notes == []


def test_verify_reports_a_damaged_or_stale_library_graph_and_passes_a_good_one(
    library: tuple[Path, dict[str, np.ndarray]], rng: np.random.Generator
) -> None:
    path, vectors = library

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "citywok_pipeline.cli", "verify", str(path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    with Snapshot.open(path) as snap:
        assert verify_library_graph(snap) == []
    assert verify().returncode == 0
    graph = path / GRAPH_FILE
    good = graph.read_bytes()
    graph.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    result = verify()
    assert result.returncode == 1 and "checksum mismatch" in result.stderr, result
    graph.write_bytes(good)
    write(path / "show-s03.lmdb", clustered(rng, SIZES["show-s03"]), season="show-s03")
    result = verify()
    assert result.returncode == 1 and "no longer fits the shards" in result.stderr, result
    # A shard beyond the ones the graph names: stale too.
    write(path / "show-s04.lmdb", vectors["show-s01"][:50], season="show-s04")
    with Snapshot.open(path) as snap:
        assert any("library graph" in p for p in verify_library_graph(snap))


def _recall(path: Path, vectors: dict[str, np.ndarray], rng: np.random.Generator) -> float:
    queries = _queries(vectors, rng)
    with Snapshot.open(path) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.library is not None and searcher.notes == []
        found = [found_ids(searcher, searcher.search_vector(q, limit=10)) for q in queries]
    return float(
        np.mean([len(f & truth_of(vectors, q)) / 10 for f, q in zip(found, queries, strict=True)])
    )


def test_a_season_rebuilt_added_or_removed_updates_the_graph_in_place(
    library: tuple[Path, dict[str, np.ndarray]], rng: np.random.Generator
) -> None:
    path, vectors = library
    vectors["show-s02"] = clustered(rng, SIZES["show-s02"])  # rebuilt
    write(path / "show-s02.lmdb", vectors["show-s02"], season="show-s02")
    vectors["show-s04"] = clustered(rng, 1500)  # added
    write(path / "show-s04.lmdb", vectors["show-s04"], season="show-s04")
    (path / "show-s03.lmdb").unlink()  # removed
    del vectors["show-s03"]
    with Snapshot.open(path) as snap:  # 3,000 rows removed of 6,500: allowed here
        info = build_library_graph(snap, min_segments=1, threads=1, max_removed_share=0.5)
        assert info is not None and info["updated"]
        assert (info["rows_added"], info["rows_removed"]) == (2000 + 1500, 2000 + 1000)
        assert info["n"] == 3000 + 2000 + 1500 and library_graph_current(snap)
        assert verify_library_graph(snap) == []
    # The old rows are gone from it (show-s02's row 17 is another vector now), the new found.
    assert _recall(path, vectors, rng) >= 0.95
    with Snapshot.open(path) as snap:
        searcher = SegmentSearcher(snap)
        for season in ("show-s02", "show-s04"):
            found = searcher.search_vector(vectors[season][17], limit=10)
            assert (season, 17) in found_ids(searcher, found)

    # Rows removed since the last full build past MAX_REMOVED_SHARE (a quarter) of the graph's
    # by default: afresh, the ordinals from 0 again.
    vectors["show-s01"] = clustered(rng, SIZES["show-s01"])
    write(path / "show-s01.lmdb", vectors["show-s01"], season="show-s01")
    with Snapshot.open(path) as snap:
        info = build_library_graph(snap, min_segments=1, threads=1)
        assert info is not None and not info["updated"] and info["removed_since_build"] == 0
        assert sorted(d["ordinal"] for d in info["shards"]) == [0, 1, 2]
    assert _recall(path, vectors, rng) >= 0.95


def test_a_damaged_or_foreign_graph_is_built_afresh_not_updated(
    library: tuple[Path, dict[str, np.ndarray]], rng: np.random.Generator
) -> None:
    path, vectors = library
    graph = path / GRAPH_FILE
    good = graph.read_bytes()
    graph.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with Snapshot.open(path) as snap:
        info = build_library_graph(snap, min_segments=1, threads=1)
        assert info is not None and not info["updated"]
    # A description naming one ordinal twice (hostile or broken): not trusted for an update.
    described = json.loads((path / INDEX_FILE).read_text())
    for d in described["shards"]:
        d["ordinal"] = 0
    (path / INDEX_FILE).write_text(json.dumps(described))
    with Snapshot.open(path) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.library is None and any("no longer fits" in n for n in searcher.notes)
        info = build_library_graph(snap, min_segments=1, threads=1)
        assert info is not None and not info["updated"]
    assert _recall(path, vectors, rng) >= 0.95
