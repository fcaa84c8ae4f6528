"""Transcript segments in a shard: written, read in place, verified, searched by their graph
and by BM25 (no model needed: vectors are made here, and queries are vectors)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import lmdb
import numpy as np
import pytest
import xxhash

from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.fingerprint.hashes import Hashes
from citywok_pipeline.fingerprint.records import Episode
from citywok_pipeline.snapshot import Snapshot, open_shard, verify_shard, write_shard
from citywok_pipeline.snapshot.quantization import quantize
from citywok_pipeline.snapshot.segments import (
    SEGMENTS_VERSION,
    SegmentTable,
    ann_vectors,
    needs_rebuild,
    sign_bits,
    words_of,
)
from citywok_pipeline.transcripts import TranscriptError
from citywok_pipeline.transcripts.search import (
    BM25_B,
    BM25_K1,
    MAX_QUERY_CHARS,
    STOP_WORDS,
    SegmentSearcher,
    check_query,
    fuse,
    keyword_words,
    phrase_pattern,
)

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
        # The graph is there, viewed in place, and finds every row's own vector first.
        assert seg.version == SEGMENTS_VERSION and seg.ann is not None and seg.bits is None
        assert len(seg.ann) == 500 and seg.ann_bytes > 500 * DIM
        assert not needs_rebuild(shard.meta["segments"])
        keys = [int(seg.ann.search(ann_vectors(seg.vectors_of(np.array([r]))[0]), 1).keys[0])
                for r in (0, 123, 499)]  # fmt: skip
        assert keys == [0, 123, 499]
        # BM25's term frequencies and lengths: "segment number 7 of the season" has 6 words.
        assert list(seg.word_len[:3]) == [6, 6, 6]
        rows, tf = seg.word_postings("the")
        assert len(rows) == 500 and set(tf.tolist()) == {1.0}
    finally:
        shard.close()


def test_the_same_segments_give_the_same_shard_bytes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # Publishing deduplicates shards by sha256: an unchanged season must rebuild identically,
    # graph included.
    vectors = clustered(rng, 800)
    digests = set()
    for name in ("a", "b"):
        path = tmp_path / name / "show-s01.lmdb"
        write(path, vectors)
        env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            digests.add(hashlib.sha256(bytes(txn.get(b"seg_ann"))).hexdigest())
        env.close()
    assert len(digests) == 1


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


def test_a_season_that_says_the_same_lines_again_verifies(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # A shared intro or a catchphrase: a third of the rows repeat another's vector, so the
    # graph's nearest row to a probe may be its twin (make demo's harbour-lights-s02 did).
    vectors = clustered(rng, 30)
    vectors[20:] = vectors[:10]
    path = tmp_path / "show-s01.lmdb"
    write(path, vectors)
    assert verify_shard(path) == []


def test_segments_naming_a_missing_episode_are_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    eps, hashes = episodes("show-s01", 2)
    with pytest.raises(ValueError, match="episode"):
        write_shard(
            tmp_path / "show-s01.lmdb", season="show-s01", episodes=eps, hashes=hashes,
            params=DEFAULT_PARAMS, segments=table(clustered(rng, 10), 5),
        )  # fmt: skip


def test_sign_bits_agree_with_a_naive_reference(rng: np.random.Generator) -> None:
    # (What shards of segment format 1 hold, and verify checks.)
    x = rng.standard_normal((37, 100)).astype(np.float32)  # 100 bits: two words, padded
    bits = sign_bits(x)
    assert bits.shape == (2, 37) and bits.dtype == np.uint64
    unpacked = np.unpackbits(bits.T.copy().view(np.uint8), axis=1, bitorder="little")[:, :100]
    np.testing.assert_array_equal(unpacked, (x > 0).astype(np.uint8))
    assert sign_bits(np.zeros((0, 384))).shape == (6, 0)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-(vectors @ query))[:k].tolist())


def test_the_shards_graphs_keep_recall_against_exact_search(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # Two shards, each searched through its graph, their top 10 merged.
    a, b = clustered(rng, 6000), clustered(rng, 4000)
    write(tmp_path / "show-s01.lmdb", a, season="show-s01")
    write(tmp_path / "show-s02.lmdb", b, season="show-s02")
    everything = np.concatenate([a, b])
    queries = unit(
        everything[rng.choice(len(everything), 50)] + 0.05 * rng.standard_normal((50, DIM))
    )
    with Snapshot.open(tmp_path) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.n_segments == 10_000 and searcher.notes == []
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
    assert np.mean(recalls) >= 0.95
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


def as_format_1(path: Path) -> None:
    """Rewrite a shard's segments the way this project wrote them before the ANN index
    (segment format 1): sign bits instead of the graph, no term frequencies or lengths."""
    env = lmdb.open(str(path), subdir=False, lock=False, map_size=1 << 30)
    with env.begin(write=True) as txn:
        meta = json.loads(bytes(txn.get(b"meta")))
        seg = meta["segments"]
        n, dim = seg["n"], seg["dim"]
        raw = txn.get(b"seg_vectors")
        vectors = np.frombuffer(raw, "<f2" if seg["quantization"] == "float16" else "i1")
        bits = sign_bits(vectors.reshape(n, dim)).astype("<u8").tobytes()
        txn.put(b"seg_bits", bits)
        for key in ("seg_ann", "seg_word_tf", "seg_word_len"):
            txn.delete(key.encode())
            del seg["checksums"][key]
        seg["checksums"]["seg_bits"] = xxhash.xxh64(bits).hexdigest()
        for key in ("version", "ann", "words"):
            del seg[key]
        meta_b = json.dumps(meta, sort_keys=True).encode()
        txn.put(b"meta", meta_b)
        if txn.get(b"meta_checksum") is not None:  # (written by later builds only)
            txn.delete(b"meta_checksum")
    env.close()


def test_a_shard_from_before_the_graph_is_searched_exhaustively_with_a_note(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    a, b = clustered(rng, 300), clustered(rng, 200)
    write(tmp_path / "show-s01.lmdb", a, season="show-s01")
    write(tmp_path / "show-s02.lmdb", b, season="show-s02")
    as_format_1(tmp_path / "show-s01.lmdb")
    assert verify_shard(tmp_path / "show-s01.lmdb") == []
    with Snapshot.open(tmp_path) as snap:
        old, new = snap.shards
        assert needs_rebuild(old.meta["segments"]) and not needs_rebuild(new.meta["segments"])
        assert old.segments is not None and old.segments.ann is None
        searcher = SegmentSearcher(snap)
        assert len(searcher.notes) == 1 and "show-s01" in searcher.notes[0]
        assert "citywok index" in searcher.notes[0]
        everything = np.concatenate([a, b])
        q = unit(everything[17] + 0.05 * rng.standard_normal(DIM))
        found = searcher.hits(searcher.search_vector(q, limit=5))
        ids = [(h.extra["season"], round(h.start_s / 2.0)) for h in found]
        truth = [("show-s01" if i < 300 else "show-s02", i if i < 300 else i - 300)
                 for i in np.argsort(-(everything @ q))[:5]]  # fmt: skip
        assert ids == truth
        # Words still rank (every segment has the same words here but its number).
        words = searcher.hits(searcher.search_words("number 17", limit=3))
        assert {h.text for h in words[:2]} == {"segment number 17 of the season"}


def bm25_reference(texts: list[str], query: str) -> dict[int, float]:
    """BM25 of every text for the query, straight from the formula."""
    docs = [Counter(words_of(t)) for t in texts]
    mean = sum(sum(d.values()) for d in docs) / len(docs)
    out: dict[int, float] = {}
    for term in set(words_of(query)) - STOP_WORDS or set(words_of(query)):
        df = sum(term in d for d in docs)
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            if term in d:
                tf, length = d[term], sum(d.values())
                norm = BM25_K1 * (1 - BM25_B + BM25_B * length / mean)
                out[i] = out.get(i, 0.0) + idf * tf * (BM25_K1 + 1) / (tf + norm)
    return out


def test_bm25_over_two_shards_is_the_librarys_bm25(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    words = ["kettle", "harbour", "ladder", "the", "a", "garden", "Vesuvius", "radio", "old"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) for _ in range(120)]
    texts[5] = "the kettle the kettle the kettle by the harbour"
    vectors = clustered(rng, 120)
    for season, lo, hi in (("show-s01", 0, 70), ("show-s02", 70, 120)):
        eps, hashes = episodes(season, 1)
        segments = SegmentTable(
            np.zeros(hi - lo, np.uint32), np.arange(hi - lo, dtype=np.float32),
            np.arange(hi - lo, dtype=np.float32) + 0.5, texts[lo:hi],
            quantize(vectors[lo:hi]), "test-model",
        )  # fmt: skip
        write_shard(
            tmp_path / f"{season}.lmdb", season=season, episodes=eps, hashes=hashes,
            params=DEFAULT_PARAMS, segments=segments,
        )  # fmt: skip
    with Snapshot.open(tmp_path) as snap:
        searcher = SegmentSearcher(snap)
        for query in ("kettle harbour", "Vesuvius", "the old radio", "nothing here", "the a"):
            want = bm25_reference(texts, query)
            found = searcher.hits(searcher.search_words(query, limit=200))
            got = {(0 if h.extra["season"] == "show-s01" else 70) + int(h.start_s): h.score
                   for h in found}  # fmt: skip
            assert got.keys() == want.keys(), query
            for i, score in want.items():
                assert got[i] == pytest.approx(score, rel=1e-4), (query, i)
            assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    by_meaning = [(0, 1, 0.9), (0, 2, 0.8), (1, 7, 0.7)]
    by_words = [(1, 7, 12.0), (0, 3, 5.0)]
    fused = fuse([by_meaning, by_words])
    # (0, 2) and (0, 3) tie at 1/62: the first ranking's order breaks it.
    assert [(p, r) for p, r, _ in fused] == [(1, 7), (0, 1), (0, 2), (0, 3)]
    assert fused[0][2] == pytest.approx(1 / 63 + 1 / 61)
    assert fuse([[], []]) == []


def test_an_empty_or_overlong_query_is_refused() -> None:
    assert check_query("x" * MAX_QUERY_CHARS) == "x" * MAX_QUERY_CHARS
    for text in ("", "   \n", "x" * (MAX_QUERY_CHARS + 1)):
        with pytest.raises(TranscriptError, match=r"empty|characters"):
            check_query(text)
