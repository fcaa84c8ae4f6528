"""The HTTP API of `citywok serve`, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from citywok_pipeline.publishing import publish_snapshot, pull_version
from tests.conftest import S3Server
from tests.publishing.conftest import build_season, s3_bucket_for

from .conftest import SR, Library, Server, ServerFactory, encode_clip, make_library


def test_a_clip_uploaded_to_match_is_found_with_its_offset(
    library: Library, server: Server
) -> None:
    clip = library.clip("beta-s01e02", 4.0, "clip.mp3")
    with server.client() as http:
        r = http.post("/match", files={"file": ("clip.mp3", clip.read_bytes(), "audio/mpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "clip.mp3" and body["ambiguous"] is False
    best = body["matches"][0]
    assert best["episode_id"] == "beta-s01e02" and abs(best["offset_s"] - 4.0) < 0.1
    assert set(best) >= {"source", "season", "score", "confidence"}


def test_a_clip_not_in_the_library_gets_no_match(library: Library, server: Server) -> None:
    from tests.conftest import tone_music

    from .conftest import encode_clip

    clip = encode_clip(tone_music(5.0, seed=999), library.root / "stranger.m4a")
    with server.client() as http:
        r = http.post("/match", files={"file": ("stranger.m4a", clip.read_bytes())})
    assert r.status_code == 200, r.text
    assert r.json()["matches"] == []


def test_bad_uploads_get_a_4xx_with_a_clear_message(server: Server, tmp_path: Path) -> None:
    with server.client() as http:
        empty = http.post("/match", files={"file": ("empty.mp3", b"")})
        text = http.post("/match", files={"file": ("notes.mp3", b"shopping list\n" * 20)})
        big = http.post("/match", files={"file": ("big.wav", b"\0" * 400_000)})
        missing = http.post("/match", files={"other": ("x.mp3", b"abc")})
        nothing = http.post("/match")
        raw = http.post("/match", content=b"ID3", headers={"Content-Type": "audio/mpeg"})
    assert empty.status_code == 400 and "empty.mp3" in empty.json()["detail"]
    for r in (nothing, raw):
        assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    assert "empty" in empty.json()["detail"]
    assert text.status_code == 415 and "notes.mp3" in text.json()["detail"]
    assert big.status_code == 413 and "300000" in big.json()["detail"]
    assert missing.status_code == 400 and "no field 'file'" in missing.json()["detail"]


def test_healthz_and_episodes_describe_the_version_served(library: Library, server: Server) -> None:
    with server.client() as http:
        health = http.get("/healthz").json()
        episodes = http.get("/episodes").json()
        docs = http.get("/docs")
    assert health["status"] == "ok"
    assert health["version"] == library.version
    assert health["episodes"] == 4 and health["segments"] == 0 and health["uptime_s"] > 0
    assert episodes["version"] == library.version
    assert sorted(e["episode_id"] for e in episodes["episodes"]) == sorted(library.audio)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_search_on_a_version_without_transcripts_says_so(server: Server) -> None:
    with server.client() as http:
        r = http.get("/search", params={"q": "where is the harbour"})
        blank = http.get("/search", params={"q": ""})
        symbols = http.get("/search", params={"q": "harbour", "keyword": ".*"})
    assert r.status_code == 404 and "no transcript segments" in r.json()["detail"]
    assert blank.status_code == 400 and "empty" in blank.json()["detail"]
    assert symbols.status_code == 400
    assert "a keyword needs a letter or a digit, got '.*'" in symbols.json()["detail"]


def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    lib = make_library(tmp_path)
    server = start_server(str(lib.served), "--poll", "0.2")
    clip = lib.clip("alpha-s01e01", 3.0, "load.mp3").read_bytes()
    stop = threading.Event()
    matched: list[tuple[int, str | None]] = []
    versions: list[tuple[int, str | None]] = []
    errors: list[str] = []

    def load() -> None:
        with server.client() as http:
            while not stop.is_set():
                try:
                    r = http.post("/match", files={"file": ("load.mp3", clip)})
                    h = http.get("/healthz")
                    best = r.json()["matches"][0]["episode_id"] if r.status_code == 200 else None
                    matched.append((r.status_code, best))
                    versions.append((h.status_code, h.json().get("version")))
                except (httpx.HTTPError, ValueError, IndexError) as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    gamma = build_season(lib.snapshot, "gamma-s01", (50,))
    new = publish_snapshot(lib.snapshot, lib.bucket).version
    pull_version(lib.bucket, lib.served)
    deadline = time.monotonic() + 20
    with server.client() as http:
        while http.get("/healthz").json()["version"] != new:
            assert time.monotonic() < deadline, "the new version was not picked up in 20 s"
            time.sleep(0.05)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)

    assert errors == []
    assert len(matched) > 10 and all(m == (200, "alpha-s01e01") for m in matched)
    assert all(code == 200 for code, _ in versions)
    assert {v for _, v in versions} == {lib.version, new}
    lib.audio["gamma-s01e01"] = gamma[0]
    with server.client() as http:
        g = lib.clip("gamma-s01e01", 2.0, "g.mp3").read_bytes()
        found = http.post("/match", files={"file": ("g.mp3", g)})
    assert found.json()["matches"][0]["episode_id"] == "gamma-s01e01"


def test_a_server_on_a_bucket_pulls_the_latest_version_and_follows_it(
    seaweedfs: S3Server, s3_bucket: str, start_server: ServerFactory, tmp_path: Path
) -> None:
    bucket = s3_bucket_for(seaweedfs, s3_bucket)
    snapshot = tmp_path / "snapshot"
    build_season(snapshot, "alpha-s01", (1, 2))
    first = publish_snapshot(snapshot, bucket).version
    env = {
        "CITYWOK_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    server = start_server(bucket.url, "--cache", str(tmp_path / "cache"), "--poll", "0.2", env=env)
    with server.client() as http:
        assert http.get("/healthz").json()["version"] == first
        build_season(snapshot, "beta-s01", (3,))
        second = publish_snapshot(snapshot, bucket).version
        deadline = time.monotonic() + 20
        while (health := http.get("/healthz").json())["version"] != second:
            assert time.monotonic() < deadline, "the new version was not picked up in 20 s"
            time.sleep(0.1)
    assert health["episodes"] == 3
    assert (tmp_path / "cache" / "versions" / second / "beta-s01.lmdb").is_file()


def test_only_the_first_max_clip_seconds_of_an_upload_are_matched(
    library: Library, server: Server, start_server: ServerFactory
) -> None:
    # 3 s of one episode, then 7 s of another: the whole clip is mostly the second.
    first = library.audio["alpha-s01e01"][int(2.0 * SR) : int(5.0 * SR)]
    then = library.audio["beta-s01e02"][int(3.0 * SR) : int(10.0 * SR)]
    data = encode_clip(np.concatenate([first, then]), library.root / "spliced.mp3").read_bytes()
    short = start_server(str(library.served), "--poll", "0", "--max-clip", "3")
    with server.client() as http, short.client() as http_short:
        whole = http.post("/match", files={"file": ("spliced.mp3", data)}).json()
        head = http_short.post("/match", files={"file": ("spliced.mp3", data)}).json()
    assert whole["matches"][0]["episode_id"] == "beta-s01e02"
    assert head["matches"][0]["episode_id"] == "alpha-s01e01"
    assert abs(head["matches"][0]["offset_s"] - 2.0) < 0.1


def test_an_m4a_with_its_index_at_the_end_is_matched(library: Library, server: Server) -> None:
    # ffmpeg writes the moov atom after the audio: decoding it needs to seek in the upload.
    clip = library.clip("alpha-s01e02", 6.0, "late-index.m4a")
    assert clip.read_bytes().find(b"moov") > clip.read_bytes().find(b"mdat")
    with server.client() as http:
        r = http.post("/match", files={"file": ("late-index.m4a", clip.read_bytes())})
    assert r.status_code == 200, r.text
    best = r.json()["matches"][0]
    assert best["episode_id"] == "alpha-s01e02" and abs(best["offset_s"] - 6.0) < 0.1


def test_decoding_with_the_ffmpeg_command_gives_the_same_answer(
    library: Library, server: Server, start_server: ServerFactory
) -> None:
    isolated = start_server(str(library.served), "--poll", "0", "--decoder", "ffmpeg")
    clip = library.clip("beta-s01e01", 1.5, "same.ogg").read_bytes()
    with server.client() as http, isolated.client() as http_isolated:
        in_process = http.post("/match", files={"file": ("same.ogg", clip)}).json()
        by_command = http_isolated.post("/match", files={"file": ("same.ogg", clip)}).json()
        bad = http_isolated.post("/match", files={"file": ("notes.mp3", b"shopping list\n" * 20)})
    assert in_process["matches"][0]["episode_id"] == "beta-s01e01"
    assert by_command == in_process
    assert bad.status_code == 415 and "notes.mp3" in bad.json()["detail"]


def test_a_worker_that_dies_is_replaced_and_the_server_goes_on_answering(
    library: Library, start_server: ServerFactory
) -> None:
    server = start_server(str(library.served), "--poll", "0", "--workers", "2")
    clip = library.clip("alpha-s01e01", 2.0, "w.mp3").read_bytes()

    def worker_pids(tries: int) -> set[int]:
        seen = set()
        for _ in range(tries):
            with server.client() as http:  # a new connection each time: either worker
                seen.add(http.get("/readyz").json()["worker_pid"])
        return seen

    workers = worker_pids(60)
    assert len(workers) == 2 and server.proc.pid not in workers
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (worker_pids(10) - workers):
        assert time.monotonic() < deadline, "no worker was started in place of the killed one"
        time.sleep(0.2)
    with server.client() as http:
        for _ in range(6):
            r = http.post("/match", files={"file": ("w.mp3", clip)})
            assert r.status_code == 200 and r.json()["matches"][0]["episode_id"] == "alpha-s01e01"
    assert victim not in worker_pids(30)
