"""The three search modes on the demo library's lines: each line asked for as it is, 30 lines
asked for in other words (a fixture written by hand), and rare words asked for alone.

``hit_rates`` is also what ``benchmarks.search_snapshot`` reports for each mode.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.fingerprint.hashes import Hashes
from citywok_pipeline.fingerprint.records import Episode
from citywok_pipeline.snapshot import Snapshot, write_shard
from citywok_pipeline.snapshot.quantization import quantize
from citywok_pipeline.snapshot.segments import SegmentTable, words_of
from citywok_pipeline.transcripts.embedder import Embedder, load_query_embedder
from citywok_pipeline.transcripts.search import MODES, STOP_WORDS, SegmentSearcher

FIXTURE = Path(__file__).parent / "fixtures" / "demo_lines.json"
LINES_PER_EPISODE = 13  # about what a 45 s demo episode says


@contextlib.contextmanager
def build_line_snapshot(
    root: Path, fixture: Path, embedder: Embedder
) -> Iterator[tuple[SegmentSearcher, dict[str, Any]]]:
    """The fixture's lines as segments of two seasons' shards (13 to an episode, in order),
    open, with a searcher over them."""
    lines = json.loads(fixture.read_text())
    texts: list[str] = lines["lines"]
    if root.exists():
        shutil.rmtree(root)
    vectors = embedder.embed(texts)
    half = len(texts) // 2
    for s, (lo, hi) in enumerate(((0, half), (half, len(texts)))):
        season = f"demo-s{s + 1:02d}"
        rows = np.arange(hi - lo)
        episode = rows // LINES_PER_EPISODE
        eps = [Episode(episode_id=f"{season}e{e + 1:02d}", season=season, source=f"{season}/{e}")
               for e in range(int(episode[-1]) + 1)]  # fmt: skip
        table = SegmentTable(
            episode.astype(np.uint32), (rows % LINES_PER_EPISODE * 3.0).astype(np.float32),
            (rows % LINES_PER_EPISODE * 3.0 + 2.5).astype(np.float32), texts[lo:hi],
            quantize(vectors[lo:hi]), embedder.model_name,
        )  # fmt: skip
        write_shard(
            root / f"{season}.lmdb", season=season, episodes=eps,
            hashes=[Hashes(np.zeros(1, np.uint32), np.zeros(1, np.float32)) for _ in eps],
            params=DEFAULT_PARAMS, segments=table,
        )  # fmt: skip
    with Snapshot.open(root) as snap:
        yield SegmentSearcher(snap, embedder), lines


def rare_words(texts: list[str], *, at_most: int = 2) -> dict[str, list[str]]:
    """Words (not stop words, at least 4 letters) in at most ``at_most`` lines: the lines."""
    holding: dict[str, list[str]] = {}
    for text in texts:
        for word in set(words_of(text)):
            holding.setdefault(word, []).append(text)
    return {
        w: ts
        for w, ts in sorted(holding.items())
        if len(ts) <= at_most and len(w) >= 4 and w not in STOP_WORDS
    }


def hit_rates(searcher: SegmentSearcher, lines: dict[str, Any], k: int = 3) -> dict[str, Any]:
    """Top-``k`` hit rate of each mode: the line found for itself, for its paraphrase, and a
    line holding a rare word for the word alone."""
    texts: list[str] = lines["lines"]
    rare = rare_words(texts)
    cases: dict[str, list[tuple[str, set[str]]]] = {
        "exact": [(t, {t}) for t in texts],
        "paraphrase": [(p["paraphrase"], {p["line"]}) for p in lines["paraphrases"]],
        "rare_word": [(w, set(ts)) for w, ts in rare.items()],
    }
    vectors = {kind: searcher.embedder.embed([q for q, _ in qs]) for kind, qs in cases.items()}
    top: dict[str, dict[str, float]] = {}
    misses: dict[str, dict[str, list[str]]] = {}
    for mode in MODES:
        top[mode], misses[mode] = {}, {}
        for kind, qs in cases.items():
            found = Counter()
            missed = []
            for (query, want), v in zip(qs, vectors[kind], strict=True):
                hits = searcher.rank(query, v, limit=k, mode=mode)
                ok = any(h.text in want for h in hits)
                found[ok] += 1
                if not ok:
                    missed.append(query)
            top[mode][kind] = round(found[True] / len(qs), 4)
            misses[mode][kind] = missed[:5]
    return {
        "segments": len(texts),
        "counts": {kind: len(qs) for kind, qs in cases.items()},
        "top3": top,
        "missed_examples": misses,
    }


@pytest.fixture(scope="module")
def rates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("modes") / "snap"
    with build_line_snapshot(root, FIXTURE, load_query_embedder()) as (searcher, lines):
        return hit_rates(searcher, lines)


def test_the_fixture_has_thirty_paraphrases_of_its_own_lines() -> None:
    lines = json.loads(FIXTURE.read_text())
    assert len(lines["paraphrases"]) == 30 and len(set(lines["lines"])) == len(lines["lines"])
    for p in lines["paraphrases"]:
        assert p["line"] in lines["lines"] and p["paraphrase"] != p["line"]
    assert len(rare_words(lines["lines"])) >= 10


def test_every_mode_finds_a_line_asked_for_as_it_is(rates: dict[str, Any]) -> None:
    for mode in MODES:
        assert rates["top3"][mode]["exact"] >= 0.9, (mode, rates["missed_examples"][mode])


def test_meaning_finds_paraphrases_that_words_alone_miss(rates: dict[str, Any]) -> None:
    top = rates["top3"]
    assert top["semantic"]["paraphrase"] > top["keyword"]["paraphrase"]
    assert top["hybrid"]["paraphrase"] >= top["keyword"]["paraphrase"]


def test_words_find_a_rare_word_and_hybrid_keeps_it(rates: dict[str, Any]) -> None:
    top = rates["top3"]
    assert top["keyword"]["rare_word"] >= 0.9
    assert top["hybrid"]["rare_word"] >= top["semantic"]["rare_word"]
    assert top["hybrid"]["rare_word"] >= 0.8
