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
    query = "a giraffe eating an accordion"
    with transcribed_server.client(timeout=60) as http:
        r = http.get("/search", params={"q": query, "limit": 3, "mode": "semantic"})
        fused = http.get("/search", params={"q": query, "limit": 3})
        words = http.get("/search", params={"q": query, "limit": 3, "mode": "keyword"})
        health = http.get("/healthz").json()
    assert r.status_code == 200, r.text
    hits = r.json()
    shape = {"episode_id", "source", "start_s", "end_s", "text", "score"}
    assert len(hits) == 3
    assert set(hits[0]) == shape
    assert (hits[0]["episode_id"], hits[0]["start_s"]) == ("harbour-lights-s01e02", 21.5)
    assert hits[0]["score"] > 0.5 > hits[1]["score"]
    assert health["segments"] == 10
    # Hybrid, the default: the same best segment, its cosine and BM25 score beside the fused.
    assert fused.status_code == 200, fused.text
    best = fused.json()[0]
    assert set(best) == shape | {"cosine", "bm25"} and best["start_s"] == 21.5
    assert best["cosine"] == pytest.approx(hits[0]["score"], abs=1e-3)
    assert words.status_code == 200 and words.json()[0]["start_s"] == 21.5


def test_search_over_http_refuses_an_empty_or_overlong_query(transcribed_server: Server) -> None:
    with transcribed_server.client(timeout=60) as http:
        missing = http.get("/search")
        blank = http.get("/search", params={"q": "  "})
        long = http.get("/search", params={"q": "bread " * 200})
        mode = http.get("/search", params={"q": "bread", "mode": "fuzzy"})
    assert missing.status_code == 400 and "empty" in missing.json()["detail"]
    assert blank.status_code == 400 and "empty" in blank.json()["detail"]
    assert long.status_code == 400 and "at most 1,000" in long.json()["detail"]
    assert mode.status_code == 422 and "hybrid" in mode.text


def test_search_over_http_with_a_keyword_keeps_only_segments_that_say_it(
    transcribed_server: Server,
) -> None:
    with transcribed_server.client(timeout=60) as http:
        r = http.get("/search", params={"q": "weather at sea", "keyword": "storm"})
    assert r.status_code == 200, r.text
    assert [h["episode_id"] for h in r.json()] == ["harbour-lights-s01e01"]
    assert "storm" in r.json()[0]["text"]
