"""POST /match?segments=true: a long recording uploaded to a real `citywok serve` is answered
with its segments (the `citywok match --segments --json` shape), cut at --max-clip."""

from __future__ import annotations

import numpy as np
import pytest

from citywok_pipeline.demo.recording import Recording, Source, compose_recording
from tests.conftest import tone_music

from .conftest import SR, Library, ServerFactory, encode_clip

SEGMENT_KEYS = {"episode_id", "source", "season", "start_s", "end_s", "offset_s", "confidence",
                "speed", "ambiguous"}  # fmt: skip


@pytest.fixture(scope="module")
def recording(library: Library) -> Recording:
    sources = [Source(key, x) for key, x in sorted(library.audio.items())]
    return compose_recording(
        sources, tone_music(30.0, seed=999), sample_rate=SR, rng=np.random.default_rng(2),
        excerpts=(3, 3), excerpt_s=(5.0, 8.0), intro_share=0.0, back_to_back=0.0,
    )  # fmt: skip


def test_a_recording_uploaded_with_segments_gets_each_excerpt(
    library: Library, recording: Recording, start_server: ServerFactory
) -> None:
    server = start_server(str(library.served), "--poll", "0", "--max-upload", "5000000")
    upload = encode_clip(recording.samples, library.root / "recording.m4a").read_bytes()
    with server.client() as http:
        r = http.post("/match", params={"segments": "true"},
                      files={"file": ("recording.m4a", upload)})  # fmt: skip
        clip = http.post("/match", files={"file": ("recording.m4a", upload)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "recording.m4a" and body["ended"] == "end"
    assert body["duration_s"] == pytest.approx(recording.duration_s, abs=0.1)
    assert "warnings" not in body
    parts = recording.excerpts()
    assert len(body["segments"]) == len(parts)
    for part, seg in zip(parts, body["segments"], strict=True):
        assert set(seg) >= SEGMENT_KEYS
        assert seg["episode_id"] == part.key and not seg["ambiguous"]
        assert abs(seg["start_s"] - part.start_s) <= 1.0 and abs(seg["end_s"] - part.end_s) <= 1.0
        assert abs(seg["offset_s"] - (part.offset_s + seg["start_s"] - part.start_s)) <= 1.5
    # Without segments=true the same upload is one clip, as before.
    assert clip.status_code == 200 and "matches" in clip.json()


def test_a_recording_past_max_clip_is_cut_with_a_warning_not_refused(
    library: Library, recording: Recording, start_server: ServerFactory
) -> None:
    limit = round(recording.excerpts()[1].end_s + 3)
    server = start_server(
        str(library.served), "--poll", "0", "--max-upload", "5000000", "--max-clip", str(limit)
    )
    upload = encode_clip(recording.samples, library.root / "long.m4a").read_bytes()
    with server.client() as http:
        r = http.post("/match?segments=true", files={"file": ("long.m4a", upload)})
        text = http.post("/match?segments=true", files={"file": ("notes.m4a", b"a note\n" * 50)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration_s"] == pytest.approx(limit, abs=0.01)
    assert body["warnings"] and f"cut at {limit} s" in body["warnings"][0]
    assert [s["episode_id"] for s in body["segments"]] == [p.key for p in recording.excerpts()[:2]]
    assert text.status_code == 415 and "notes.m4a" in text.json()["detail"]
