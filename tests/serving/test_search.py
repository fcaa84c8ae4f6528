"""GET /search over HTTP, on a snapshot whose shards hold transcript segments."""

from __future__ import annotations

import pytest

from citywok_pipeline.transcripts.embedder import load_embedder
from tests.transcripts.test_search import build_snapshot

from .conftest import Server, ServerFactory

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcribed_server(
    tmp_path_factory: pytest.TempPathFactory, start_server: ServerFactory
) -> Server:
    snapshot = build_snapshot(tmp_path_factory.mktemp("transcribed"), load_embedder(device="cpu"))
    return start_server(str(snapshot), "--poll", "0")


def test_search_over_http_finds_the_episode_and_second_of_a_phrase(
    transcribed_server: Server,
) -> None:
    with transcribed_server.client(timeout=60) as http:
        r = http.get("/search", params={"q": "a giraffe eating an accordion", "limit": 3})
        health = http.get("/healthz").json()
    assert r.status_code == 200, r.text
    hits = r.json()
    assert len(hits) == 3
    assert set(hits[0]) == {"episode_id", "source", "start_s", "end_s", "text", "score"}
    assert (hits[0]["episode_id"], hits[0]["start_s"]) == ("harbour-lights-s01e02", 21.5)
    assert hits[0]["score"] > 0.5 > hits[1]["score"]
    assert health["segments"] == 10


def test_search_over_http_with_a_keyword_keeps_only_segments_that_say_it(
    transcribed_server: Server,
) -> None:
    with transcribed_server.client(timeout=60) as http:
        r = http.get("/search", params={"q": "weather at sea", "keyword": "storm"})
    assert r.status_code == 200, r.text
    assert [h["episode_id"] for h in r.json()] == ["harbour-lights-s01e01"]
    assert "storm" in r.json()[0]["text"]
