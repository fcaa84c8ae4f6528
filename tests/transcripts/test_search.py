"""Segment embeddings and snapshot search with the real packaged all-MiniLM-L6-v2, and the
``citywok search`` command over a snapshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.fingerprint.hashes import Hashes
from citywok_pipeline.fingerprint.records import Episode
from citywok_pipeline.snapshot import Snapshot, verify_snapshot, write_shard
from citywok_pipeline.snapshot.segments import SegmentTable
from citywok_pipeline.transcripts import ModelNotFoundError, Segment, Transcript, TranscriptError
from citywok_pipeline.transcripts.embedder import Embedder, load_embedder
from citywok_pipeline.transcripts.embeddings import (
    SegmentEmbeddings,
    embed_transcript,
    pack_embeddings,
    unpack_embeddings,
)
from citywok_pipeline.transcripts.search import SegmentSearcher, search_snapshot
from tests.conftest import CITYWOK

# Two seasons of two episodes; each line is (start, text). The distinctive phrase is in
# harbour-lights-s01e02 at 21.5 s.
SCRIPTS = {
    "harbour-lights-s01e01": [
        (2.0, "Good morning, the ferry is late again."),
        (6.5, "Maya borrowed the old bicycle last summer."),
        (11.0, "Did you see the storm over the harbour?"),
    ],
    "harbour-lights-s01e02": [
        (1.0, "Where did you put the umbrella?"),
        (9.0, "Tom fixed the broken radio in the attic."),
        (21.5, "The purple giraffe ate my accordion at the bus stop."),
    ],
    "night-kitchen-s01e01": [
        (3.0, "The soup needs more salt, chef."),
        (8.0, "Nobody cleaned the ovens before the inspection."),
    ],
    "night-kitchen-s01e02": [
        (4.0, "We ran out of bread at midnight."),
        (12.0, "Grace polished the copper pans for the wedding."),
    ],
}


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder(device="cpu")


def transcript(lines: list[tuple[float, str]]) -> Transcript:
    return Transcript(
        language="en",
        duration_s=30.0,
        segments=tuple(Segment(start=t, end=t + 3.0, text=f" {text}") for t, text in lines),
        model="test",
        backend="test",
        device="cpu",
    )


def build_snapshot(
    root: Path, embedder: Embedder, *, quantization: str = "float16", scripts=SCRIPTS
) -> Path:
    """One shard per season from hand-made transcripts, as ``season_snapshot`` builds it."""
    seasons: dict[str, list[str]] = {}
    for episode_id in scripts:
        seasons.setdefault(episode_id.rsplit("e", 1)[0], []).append(episode_id)
    for season, ids in seasons.items():
        eps = [
            Episode(episode_id=e, season=season, source=f"{season}/{e}.mp3", duration_s=30.0)
            for e in ids
        ]
        hashes = [
            Hashes(np.arange(3, dtype=np.uint32) + i, np.zeros(3, np.float32))
            for i in range(len(ids))
        ]
        embedded = [
            embed_transcript(
                transcript(scripts[e]), embedder, episode_id=e, quantization=quantization
            )
            for e in ids
        ]
        table = SegmentTable.concat(
            [
                SegmentTable(
                    np.full(len(s), i, np.uint32), s.start, s.end, s.texts, s.vectors, s.model
                )
                for i, s in enumerate(embedded)
            ],
            model=embedder.model_name,
            dim=embedder.dim,
        )
        write_shard(
            root / f"{season}.lmdb", season=season, episodes=eps, hashes=hashes,
            params=DEFAULT_PARAMS, segments=table,
        )  # fmt: skip
    return root


def test_embeddings_are_unit_vectors_one_per_spoken_segment(embedder: Embedder) -> None:
    t = Transcript(
        language="en",
        duration_s=10,
        segments=(
            Segment(start=4.0, end=5.0, text=" second  line "),
            Segment(start=1.0, end=2.0, text="first line"),
            Segment(start=6.0, end=7.0, text="   "),
        ),
    )
    e = embed_transcript(t, embedder, episode_id="x-s01e01", transcript_version="abc")
    assert e.texts == ("first line", "second line")
    assert e.model == "all-MiniLM-L6-v2" and e.dim == 384 and e.quantization == "float16"
    np.testing.assert_allclose(np.linalg.norm(e.vectors.dequantize(), axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(e.start, [1.0, 4.0])


def test_silence_gives_no_segment_embeddings(embedder: Embedder) -> None:
    e = embed_transcript(
        Transcript(language="en", duration_s=30.0), embedder, episode_id="quiet-s01e01"
    )
    assert len(e) == 0 and e.vectors.data.shape == (0, 384)
    back = unpack_embeddings(pack_embeddings(e)[0])
    assert len(back) == 0 and back.dim == 384


@pytest.mark.parametrize("quantization", ["float16", "int8"])
def test_the_embeddings_artefact_round_trips(embedder: Embedder, quantization: str) -> None:
    e = embed_transcript(
        transcript(SCRIPTS["harbour-lights-s01e01"]),
        embedder,
        episode_id="harbour-lights-s01e01",
        quantization=quantization,
        transcript_version="t-1",
    )
    blob, version = pack_embeddings(e)
    assert pack_embeddings(e)[1] == version  # deterministic: the data version is stable
    back = unpack_embeddings(blob)
    assert isinstance(back, SegmentEmbeddings)
    assert (back.episode_id, back.model, back.quantization, back.transcript_version) == (
        "harbour-lights-s01e01", "all-MiniLM-L6-v2", quantization, "t-1",
    )  # fmt: skip
    assert back.texts == e.texts
    np.testing.assert_array_equal(back.vectors.data, e.vectors.data)
    with pytest.raises(ValueError, match=r"broken\.zst: not a readable segment embeddings"):
        unpack_embeddings(blob[:-7], label="broken.zst")


@pytest.mark.parametrize("quantization", ["float16", "int8"])
def test_search_finds_the_episode_and_second_of_a_distinctive_phrase(
    tmp_path: Path, embedder: Embedder, quantization: str
) -> None:
    build_snapshot(tmp_path, embedder, quantization=quantization)
    assert verify_snapshot(tmp_path) == []
    query = "a giraffe eating an accordion"
    hits = search_snapshot(tmp_path, query, embedder=embedder, mode="semantic")
    best = hits[0]
    assert (best.episode_id, best.start_s, best.end_s) == ("harbour-lights-s01e02", 21.5, 24.5)
    assert best.source == "harbour-lights-s01/harbour-lights-s01e02.mp3"
    assert best.score > 0.5 > hits[1].score
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) == sum(len(v) for v in SCRIPTS.values())  # fewer than the limit of 10
    # Hybrid (the default) agrees, and carries the cosine and the words' BM25 score.
    fused = search_snapshot(tmp_path, query, embedder=embedder)
    assert (fused[0].episode_id, fused[0].start_s) == (best.episode_id, best.start_s)
    assert fused[0].extra["cosine"] == pytest.approx(best.score, abs=1e-6)
    assert fused[0].extra["bm25"] > 0
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)


def test_a_rare_word_is_found_by_words_where_meaning_ranks_it_lower(
    tmp_path: Path, embedder: Embedder
) -> None:
    scripts = {**SCRIPTS, "night-kitchen-s01e02": [
        *SCRIPTS["night-kitchen-s01e02"], (20.0, "Grandma went to Vesuvius once."),
    ]}  # fmt: skip
    build_snapshot(tmp_path, embedder, scripts=scripts)
    query = "where do they say Vesuvius"
    words = search_snapshot(tmp_path, query, embedder=embedder, mode="keyword", limit=3)
    assert words[0].text == "Grandma went to Vesuvius once."
    assert all("vesuvius" in h.text.lower() or "where" in h.text.lower() for h in words)
    hybrid = search_snapshot(tmp_path, query, embedder=embedder, limit=3)
    assert "Grandma went to Vesuvius once." in [h.text for h in hybrid]
    with pytest.raises(TranscriptError, match="mode"):
        search_snapshot(tmp_path, query, embedder=embedder, mode="fuzzy")


def test_search_meaning_not_only_words(tmp_path: Path, embedder: Embedder) -> None:
    build_snapshot(tmp_path, embedder)
    with Snapshot.open(tmp_path) as snap:
        searcher = SegmentSearcher(snap, embedder)
        assert searcher.search("repairing a wireless set", limit=1)[0].start_s == 9.0
        assert (
            searcher.search("seasoning the broth", limit=1)[0].episode_id == "night-kitchen-s01e01"
        )


def test_keywords_and_limit(tmp_path: Path, embedder: Embedder) -> None:
    build_snapshot(tmp_path, embedder)
    hits = search_snapshot(tmp_path, "weather", embedder=embedder, limit=2)
    assert len(hits) == 2
    only = search_snapshot(tmp_path, "weather", embedder=embedder, keywords=["BREAD"])
    assert [h.text for h in only] == ["We ran out of bread at midnight."]
    assert search_snapshot(tmp_path, "weather", embedder=embedder, keywords=["croissant"]) == []


def test_a_query_model_other_than_the_snapshots_is_refused(
    tmp_path: Path, embedder: Embedder
) -> None:
    build_snapshot(tmp_path, embedder)
    other = Embedder(
        model_name="another-model", model_path="/x", device="cpu", dim=384, batch_size=1,
        _model=None,
    )  # fmt: skip
    with Snapshot.open(tmp_path) as snap, pytest.raises(TranscriptError, match="all-MiniLM-L6-v2"):
        SegmentSearcher(snap, other)


def test_empty_text_and_bad_limits_are_refused(tmp_path: Path, embedder: Embedder) -> None:
    build_snapshot(tmp_path, embedder)
    with pytest.raises(TranscriptError, match="empty"):
        search_snapshot(tmp_path, "  ", embedder=embedder)
    with pytest.raises(TranscriptError, match="1,001 characters"):
        search_snapshot(tmp_path, "b" * 1001, embedder=embedder)
    with pytest.raises(TranscriptError, match="limit"):
        search_snapshot(tmp_path, "bread", embedder=embedder, limit=0)


def test_a_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match=re.escape(str(missing))):
        load_embedder(missing)


def citywok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CITYWOK), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_citywok_search_prints_json_lines_best_first(tmp_path: Path, embedder: Embedder) -> None:
    snap = build_snapshot(tmp_path / "snap", embedder)
    result = citywok("search", str(snap), "giraffe and accordion", "--json", "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3
    shape = {"episode_id", "source", "start_s", "end_s", "text", "score"}
    assert set(lines[0]) == shape | {"cosine", "bm25"}  # hybrid: both scores beside the fused
    assert (lines[0]["episode_id"], lines[0]["start_s"]) == ("harbour-lights-s01e02", 21.5)
    assert lines[0]["score"] >= lines[1]["score"] >= lines[2]["score"]
    assert "Loading" not in result.stderr
    for mode in ("semantic", "keyword"):
        alone = citywok("search", str(snap), "giraffe and accordion", "--json", "--mode", mode)
        assert alone.returncode == 0, alone.stderr
        first = json.loads(alone.stdout.splitlines()[0])
        assert set(first) == shape and first["start_s"] == 21.5

    keyword = citywok("search", str(snap), "food", "--json", "--keyword", "ovens")
    assert keyword.returncode == 0, keyword.stderr
    assert [json.loads(x)["start_s"] for x in keyword.stdout.splitlines()] == [8.0]


def test_citywok_search_bad_input_exits_2(tmp_path: Path, embedder: Embedder) -> None:
    missing = citywok("search", str(tmp_path / "nothing"), "bread")
    assert missing.returncode == 2 and "no such snapshot directory" in missing.stderr
    snap = build_snapshot(tmp_path / "snap", embedder)
    alone = citywok("search", "bread")
    assert alone.returncode == 2 and "SNAPSHOT_DIR and TEXT" in alone.stderr
    model = citywok("search", str(snap), "bread", "--model", str(tmp_path / "no-model"))
    assert model.returncode == 2 and str(tmp_path / "no-model") in model.stderr
    both = citywok("search", str(snap), "bread", "--database", "postgresql://x@/y")
    assert both.returncode == 2 and "TEXT alone with --database" in both.stderr
    empty = citywok("search", str(snap), "  ")
    assert empty.returncode == 2 and "search text is empty" in empty.stderr
    long = citywok("search", str(snap), "bread " * 200)
    assert long.returncode == 2 and "at most 1,000" in long.stderr
    mode = citywok("search", str(snap), "bread", "--mode", "fuzzy")
    assert mode.returncode == 2 and "fuzzy" in mode.stderr


def test_citywok_search_of_a_snapshot_ignores_a_database_set_for_the_pipeline(
    tmp_path: Path, embedder: Embedder
) -> None:
    snap = build_snapshot(tmp_path / "snap", embedder)
    result = subprocess.run(
        [str(CITYWOK), "search", str(snap), "bread", "--json", "-n", "1"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CITYWOK_DATABASE_URL": "postgresql://nobody@/nowhere"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == "We ran out of bread at midnight."


def test_citywok_search_on_a_fingerprints_only_snapshot_finds_nothing(tmp_path: Path) -> None:
    write_shard(
        tmp_path / "show-s01.lmdb", season="show-s01",
        episodes=[Episode(episode_id="show-s01e01", season="show-s01")],
        hashes=[Hashes(np.arange(3, dtype=np.uint32), np.zeros(3, np.float32))],
        params=DEFAULT_PARAMS,
    )  # fmt: skip
    result = citywok("search", str(tmp_path), "bread", "--json")
    assert result.returncode == 0 and result.stdout == ""
    assert "no transcript segments" in result.stderr


@pytest.mark.slow
def test_spoken_phrase_is_found_after_transcription(tmp_path: Path, embedder: Embedder) -> None:
    """espeak-ng speech, transcribed by the CPU transcriber (packaged tiny.en), embedded,
    written into a shard and searched: the phrase's episode and second come back."""
    from citywok_pipeline.transcripts.transcriber import SAMPLE_RATE, load_transcriber

    if shutil.which("espeak-ng") is None:
        pytest.fail("this test needs espeak-ng: apt-get install espeak-ng (make setup does)")
    lines = {
        "show-s01e01": ["The fishing boats came home before the storm."],
        "show-s01e02": [
            "Nobody wanted the soup.",
            "The lighthouse keeper carried a lantern and a basket of bread.",
        ],
    }
    transcriber = load_transcriber(backend="faster-whisper", device="cpu")
    scripts: dict[str, list[tuple[float, str]]] = {}
    for episode_id, said in lines.items():
        audio = [np.zeros(SAMPLE_RATE * 2, np.float32)]  # two seconds of silence first
        for text in said:
            wav = tmp_path / f"{episode_id}.wav"
            subprocess.run(["espeak-ng", "-s", "120", "-w", str(wav), text], check=True)
            from citywok_pipeline.fingerprint.audio import decode

            audio += [decode(wav, sample_rate=SAMPLE_RATE), np.zeros(SAMPLE_RATE, np.float32)]
        result = transcriber.transcribe(np.concatenate(audio), label=episode_id)
        scripts[episode_id] = [(s.start, s.text) for s in result.segments]
    snap = build_snapshot(tmp_path / "snap", embedder, scripts=scripts)
    best = search_snapshot(snap, "a lantern and bread", embedder=embedder, limit=1)[0]
    assert best.episode_id == "show-s01e02"
    # The lantern line starts after 2 s of silence, the first line (~1.5 s) and 1 s of silence.
    assert 3.0 <= best.start_s <= 6.5, best
