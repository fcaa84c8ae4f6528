"""Transcript segments in a shard: written, read in place, verified, searched (no model needed:
vectors are made here, and queries are vectors)."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.fingerprint.hashes import Hashes
from citywok_pipeline.fingerprint.records import Episode
from citywok_pipeline.snapshot import Snapshot, open_shard, verify_shard, write_shard
from citywok_pipeline.snapshot.segments import SegmentTable, hamming, sign_bits
from citywok_pipeline.transcripts import TranscriptError
from citywok_pipeline.transcripts.embedder import quantize
from citywok_pipeline.transcripts.search import SegmentSearcher, keyword_words, phrase_pattern

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, *, clusters: int = 40) -> np.ndarray:
    """Unit vectors around random topics, like sentence embeddings of a few subjects."""
    centres = unit(rng.standard_normal((clusters, DIM)))
    return unit(centres[rng.integers(clusters, size=n)] + 0.12 * rng.standard_normal((n, DIM)))


def episodes(season: str, n: int) -> tuple[list[Episode], list[Hashes]]:
    eps = [
        Episode(episode_id=f"{season}e{i + 1:02d}", season=season, source=f"S/{season}/{i}.mp3")
        for i in range(n)
    ]
    hashes = [
        Hashes(np.arange(5, dtype=np.uint32) + 10 * i, np.arange(5, dtype=np.float32))
        for i in range(n)
    ]
    return eps, hashes


def table(vectors: np.ndarray, n_episodes: int, *, quantization: str = "float16") -> SegmentTable:
    n = len(vectors)
    return SegmentTable(
        np.arange(n, dtype=np.uint32) % n_episodes,
        np.arange(n, dtype=np.float32) * 2.0,
        np.arange(n, dtype=np.float32) * 2.0 + 1.5,
        [f"segment number {i} of the season" for i in range(n)],
        quantize(vectors, quantization),
        "test-model",
    )


def write(
    path: Path, vectors: np.ndarray, *, season: str = "show-s01", quantization: str = "float16"
) -> None:
    eps, hashes = episodes(season, 3)
    write_shard(
        path,
        season=season,
        episodes=eps,
        hashes=hashes,
        params=DEFAULT_PARAMS,
        segments=table(vectors, len(eps), quantization=quantization),
    )


@pytest.mark.parametrize("quantization", ["float16", "int8"])
def test_segments_round_trip_through_a_shard(
    tmp_path: Path, rng: np.random.Generator, quantization: str
) -> None:
    vectors = clustered(rng, 500)
    path = tmp_path / "show-s01.lmdb"
    write(path, vectors, quantization=quantization)
    assert verify_shard(path) == []
    shard = open_shard(path)
    try:
        seg = shard.segments
        assert seg is not None and len(seg) == 500 and shard.n_segments == 500
        assert seg.model == "test-model" and seg.quantization == quantization
        # Rows are stored by episode, then time; the times say which segment each row is.
        original = np.rint(seg.times[:, 0] / 2.0).astype(int)
        assert sorted(original) == list(range(500))
        assert list(seg.episode) == sorted(seg.episode)
        for row in (0, 123, 499):
            i = original[row]
            assert seg.text(row) == f"segment number {i} of the season"
            assert seg.episode[row] == i % 3
            assert seg.times[row, 1] == pytest.approx(seg.times[row, 0] + 1.5)
        back = shard.segments.table(np.arange(len(seg))).vectors.dequantize()
        tolerance = 2e-3 if quantization == "float16" else 1.5e-2
        assert np.abs(back - vectors[original]).max() < tolerance
        np.testing.assert_array_equal(seg.bits, sign_bits(np.asarray(seg.vectors)))
    finally:
        shard.close()


def test_a_fingerprints_only_shard_has_no_segments(tmp_path: Path) -> None:
    eps, hashes = episodes("show-s01", 2)
    path = tmp_path / "show-s01.lmdb"
    write_shard(path, season="show-s01", episodes=eps, hashes=hashes, params=DEFAULT_PARAMS)
    with Snapshot.open(tmp_path) as snap:
        assert snap.shards[0].segments is None
        assert snap.n_segments == 0 and snap.info()["segments"] == 0
        assert SegmentSearcher(snap).search_vector(unit(np.ones(DIM))) == []


def test_a_damaged_segment_value_fails_verification(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "show-s01.lmdb"
    write(path, clustered(rng, 200))
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        text = bytearray(txn.get(b"seg_text"))
        text[3] ^= 0xFF
        txn.put(b"seg_text", bytes(text))
    env.close()
    problems = verify_shard(path)
    assert any("seg_text" in p and "checksum" in p for p in problems), problems


def test_segments_naming_a_missing_episode_are_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    eps, hashes = episodes("show-s01", 2)
    with pytest.raises(ValueError, match="episode"):
        write_shard(
            tmp_path / "show-s01.lmdb", season="show-s01", episodes=eps, hashes=hashes,
            params=DEFAULT_PARAMS, segments=table(clustered(rng, 10), 5),
        )  # fmt: skip


def test_sign_bits_and_hamming_agree_with_a_naive_reference(rng: np.random.Generator) -> None:
    x = rng.standard_normal((37, 100)).astype(np.float32)  # 100 bits: two words, padded
    q = rng.standard_normal(100).astype(np.float32)
    bits = sign_bits(x)
    assert bits.shape == (2, 37) and bits.dtype == np.uint64
    naive = [(np.sign(row) != np.sign(q)).sum() for row in x]
    np.testing.assert_array_equal(hamming(bits, sign_bits(q[None, :])), naive)
    assert sign_bits(np.zeros((0, 384))).shape == (6, 0)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-(vectors @ query))[:k].tolist())


def test_ranking_by_sign_bits_first_keeps_recall_against_exact_search(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # Two shards; the searcher is told to rank by bits first even at this size.
    a, b = clustered(rng, 6000), clustered(rng, 4000)
    write(tmp_path / "show-s01.lmdb", a, season="show-s01")
    write(tmp_path / "show-s02.lmdb", b, season="show-s02")
    everything = np.concatenate([a, b])
    queries = unit(
        everything[rng.choice(len(everything), 50)] + 0.05 * rng.standard_normal((50, DIM))
    )
    with Snapshot.open(tmp_path) as snap:
        searcher = SegmentSearcher(snap, exact_limit=0, candidate_fraction=0.05, min_candidates=0)
        assert searcher.n_segments == 10_000
        recalls, exact_agrees = [], 0
        for q in queries:
            found = searcher.search_vector(q, limit=10)
            hits = searcher.hits(found)
            ids = {(h.extra["season"], round(h.start_s / 2.0)) for h in hits}
            truth = {
                ("show-s01" if i < 6000 else "show-s02", i if i < 6000 else i - 6000)
                for i in exact_top(everything, q, 10)
            }
            recalls.append(len(ids & truth) / 10)
            scores = [s for _, _, s in found]
            assert scores == sorted(scores, reverse=True)
            exact = searcher.search_vector(q, limit=10, exact=True)
            exact_ids = {
                (searcher.hits([t])[0].extra["season"], round(searcher.hits([t])[0].start_s / 2))
                for t in exact
            }
            exact_agrees += len(exact_ids & truth) >= 9
    assert np.mean(recalls) >= 0.9
    assert exact_agrees == len(queries)


def test_keywords_keep_only_segments_that_say_them(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    vectors = clustered(rng, 50)
    eps, hashes = episodes("show-s01", 2)
    texts = [f"line {i}" for i in range(50)]
    texts[7] = "Where did you put the Golden Kettle?"
    texts[31] = "The kettles were golden."  # not the whole word "kettle"
    texts[40] = "golden hour over the kettle pond"
    texts[12] = "Rendez-vous au Caf\u00e9 du coin."
    segments = SegmentTable(
        np.zeros(50, np.uint32), np.arange(50, dtype=np.float32),
        np.arange(50, dtype=np.float32) + 1, texts, quantize(vectors), "test-model",
    )  # fmt: skip
    write_shard(
        tmp_path / "show-s01.lmdb", season="show-s01", episodes=eps, hashes=hashes,
        params=DEFAULT_PARAMS, segments=segments,
    )  # fmt: skip
    with Snapshot.open(tmp_path) as snap:
        searcher = SegmentSearcher(snap)
        q = vectors[0]
        found = searcher.hits(searcher.search_vector(q, keywords=["kettle"], limit=10))
        assert {h.text for h in found} == {texts[7], texts[40]}
        found = searcher.hits(searcher.search_vector(q, keywords=["golden kettle"], limit=10))
        assert [h.text for h in found] == [texts[7]]
        assert searcher.search_vector(q, keywords=["kettle", "hour"], limit=10)[0][
            2
        ] == pytest.approx(float(vectors[40] @ q), abs=2e-3)
        assert searcher.search_vector(q, keywords=["teapot"]) == []
        found = searcher.hits(searcher.search_vector(q, keywords=["CAF\u00c9"], limit=10))
        assert [h.text for h in found] == [texts[12]]


def test_keywords_are_words_in_any_case_and_phrases_in_order() -> None:
    assert keyword_words("Golden  KETTLE!") == ["golden", "kettle"]
    assert keyword_words("CAF\u00c9") == ["caf\u00e9"]
    with pytest.raises(TranscriptError, match="letter or a digit"):
        keyword_words("?!")
    phrase = phrase_pattern(["golden", "kettle"])
    assert phrase.search("a Golden,\nkettle")
    assert not phrase.search("a kettle, golden") and not phrase.search("golden kettles")
