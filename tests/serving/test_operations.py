"""Running `citywok serve` in production: API keys, CORS, docs off, the probes, metrics, JSON
logs with request ids, and a start from the cache when the bucket is down."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from citywok_pipeline.fingerprint import DEFAULT_PARAMS, Episode
from citywok_pipeline.publishing import pull_version
from citywok_pipeline.serving import hash_api_key
from citywok_pipeline.snapshot import shard_path, write_shard
from tests.conftest import CITYWOK

from .conftest import Library, Server, ServerFactory

KEY = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        sample, value = line.rsplit(" ", 1)
        got_name, _, got_labels = sample.partition("{")
        got = ",".join(sorted(got_labels.rstrip("}").split(","))) if got_labels else ""
        if got_name == name and got == want:
            return float(value)
    return 0.0


ORIGIN = "https://app.example.org"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def locked_down(
    library: Library, start_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """A server run as in production: API keys, one CORS origin, no docs, two workers."""
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# who may call\nsha256:{hash_api_key(KEY)} ci-runner\n")
    assert KEY not in keys.read_text()  # only its hash is kept
    return start_server(str(library.served), "--poll", "0", "--workers", "2",
                        "--api-key-file", str(keys), "--cors-origin", ORIGIN, "--no-docs")  # fmt: skip


def test_with_api_keys_every_route_but_the_probes_needs_a_valid_key(locked_down: Server) -> None:
    with locked_down.client() as http:
        none = http.get("/episodes")
        wrong = http.get("/episodes", headers={"Authorization": "Bearer not-the-key"})
        bearer = http.get("/episodes", headers=AUTH)
        header = http.get("/episodes", headers={"X-API-Key": KEY})
        docs = http.get("/openapi.json")
        metrics = http.get("/metrics")
        probes = [http.get("/healthz").status_code, http.get("/readyz").status_code]
    assert none.status_code == 401 and "API key is required" in none.json()["detail"]
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
    assert bearer.status_code == 200 and header.status_code == 200
    assert docs.status_code == 401 and metrics.status_code == 401
    assert probes == [200, 200]
    assert '"client": "key:ci-runner"' in locked_down.log.read_text()


def test_a_key_file_holding_a_key_instead_of_its_hash_is_refused_at_start(
    library: Library, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{KEY}\n")
    result = subprocess.run(
        [str(CITYWOK), "serve", str(library.served), "--api-key-file", str(keys)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{keys}:1: expected 'sha256:<64 hex digits> [label]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cors_allows_only_the_origins_given(locked_down: Server, server: Server) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    with locked_down.client() as http, server.client() as plain:
        ok = http.options("/match", headers=preflight)  # a preflight carries no key
        get = http.get("/episodes", headers={"Origin": ORIGIN, **AUTH})
        refused = http.get("/episodes", headers={"Origin": ORIGIN})
        other = http.get("/episodes", headers={"Origin": "https://evil.example", **AUTH})
        default = plain.get("/episodes", headers={"Origin": ORIGIN})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert get.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in get.headers["access-control-expose-headers"].lower()
    # A refusal is readable by the page too (it says why).
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in default.headers  # none by default


def test_docs_can_be_switched_off(locked_down: Server) -> None:
    with locked_down.client() as http:
        docs = [http.get(p, headers=AUTH).status_code for p in ("/docs", "/redoc", "/openapi.json")]
        assert docs == [404] * 3
        assert http.get("/episodes", headers=AUTH).status_code == 200


def test_healthz_says_only_liveness_and_readyz_the_version_with_urls_redacted(
    library: Library, start_server: ServerFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    server = start_server(library.bucket.url, "--poll", "0.2", "--cache", str(cache))
    # latest.json made unreadable: the refresh fails (its error names the bucket's folder).
    (library.bucket.root / "latest.json").rename(tmp_path / "latest.json")
    broken = library.bucket.root / "latest.json"
    broken.write_text("{not json")
    try:
        with server.client() as http:
            deadline = time.monotonic() + 20
            while (ready := http.get("/readyz").json())["last_refresh_error"] is None:
                assert time.monotonic() < deadline, "the failed refresh was not reported"
                time.sleep(0.1)
            health = http.get("/healthz")
    finally:
        broken.unlink()
        (tmp_path / "latest.json").rename(library.bucket.root / "latest.json")
    assert set(health.json()) == {"status", "version", "episodes", "segments", "uptime_s"}
    assert ready["status"] == "ready" and ready["version"] == library.version
    assert ready["source"] == "bucket" and ready["refused_shards"] == []
    assert (ready["episodes"], ready["shards"]) == (4, 2)
    for text in (health.text, json.dumps(ready)):
        assert str(library.bucket.root) not in text and str(cache) not in text
        assert "file://" not in text


def test_metrics_count_requests_matches_and_the_version_over_all_workers(
    library: Library, locked_down: Server
) -> None:
    server = locked_down
    with server.client() as http:
        before = http.get("/metrics", headers=AUTH).text  # the module's other tests used it
    clip = library.clip("beta-s01e01", 3.0, "m.mp3").read_bytes()
    pids: set[int] = set()
    n = 0
    while len(pids) < 2 or n < 4:  # a new connection each, until both workers answered some
        assert n < 60, "one worker answered every connection"
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as http:
            assert http.post("/match", files={"file": ("m.mp3", clip)}).status_code == 200
            assert http.post("/match", files={"other": ("m.mp3", clip)}).status_code == 400
            assert http.get("/nowhere").status_code == 404
            pids.add(http.get("/readyz").json()["worker_pid"])
        n += 1
    with server.client() as http:
        r = http.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text

    def grew(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    count = "citywok_http_requests_total"
    assert grew(count, route="/match", method="POST", status="200") == n
    assert grew(count, route="/match", method="POST", status="400") == n
    assert grew(count, route="<unmatched>", method="GET", status="404") == n
    assert grew("citywok_http_request_duration_seconds_count", route="/match", method="POST",
                status="200") == n  # fmt: skip
    assert grew("citywok_matches_total", result="found") == n
    assert metric(text, "citywok_version_served", version=library.version) == 1
    assert metric(text, "citywok_episodes_served") == 4
    assert metric(text, "citywok_shards_refused") == 0
    assert "citywok_version_swaps_total" in text


def test_logs_are_json_lines_carrying_the_request_id(
    library: Library, server: Server, tmp_path: Path
) -> None:
    # A damaged flac: decoded around, with a warning logged while the request runs.
    data = bytearray(encode_flac(library, tmp_path).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 256] = bytes(range(256))
    with server.client() as http:
        r = http.post("/match", files={"file": ("scratched.flac", bytes(data))},
                      headers={"X-Request-ID": "req-42"})  # fmt: skip
        bad = http.get("/healthz", headers={"X-Request-ID": "not a token"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    assert bad.headers["x-request-id"] != "not a token" and len(bad.headers["x-request-id"]) == 16
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in server.log.read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        mine = [rec for rec in lines if rec.get("request_id") == "req-42"]
        if any(rec["logger"] == "citywok.access" for rec in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    access = next(rec for rec in mine if rec["logger"] == "citywok.access")
    assert access["route"] == "/match" and access["status"] == 200 and access["method"] == "POST"
    assert access["duration_ms"] > 0 and access["client"] == "127.0.0.1"
    assert {"time", "level", "pid"} <= set(access)
    warning = next(rec for rec in mine if rec["logger"] == "citywok_pipeline.fingerprint.audio")
    assert warning["level"] == "WARNING" and "decoded with errors" in warning["message"]


def encode_flac(library: Library, tmp_path: Path) -> Path:
    from .conftest import encode_clip

    x = library.audio["alpha-s01e02"][: 8 * 8000]
    return encode_clip(x, tmp_path / "clip.flac")


def test_a_server_started_while_its_bucket_is_down_serves_the_cached_version(
    library: Library, start_server: ServerFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    pull_version(library.bucket, cache)  # what an earlier run of the server left
    env = {"CITYWOK_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}  # fmt: skip
    server = start_server("s3://down/prefix", "--cache", str(cache), "--poll", "0", env=env)
    clip = library.clip("alpha-s01e02", 4.0, "down.mp3").read_bytes()
    with server.client() as http:
        ready = http.get("/readyz").json()
        r = http.post("/match", files={"file": ("down.mp3", clip)})
    assert ready["version"] == library.version
    assert "Could not connect" in ready["last_refresh_error"]
    assert "127.0.0.1:9" not in json.dumps(ready)
    assert r.json()["matches"][0]["episode_id"] == "alpha-s01e02"
    assert "serving the cached version" in server.log.read_text()
    # Without a cached version there is nothing to serve: a clear error, exit 2.
    result = subprocess.run(
        [str(CITYWOK), "serve", "s3://down/prefix", "--cache", str(tmp_path / "empty")],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 2 and "Could not connect" in result.stderr


def test_file_names_that_are_not_utf8_are_answered_not_a_500(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    # `citywok index` keeps a name that is not UTF-8 as surrogate escapes (os.fsdecode), as
    # here; the answers escape them as `match --json` prints them.
    from citywok_pipeline.fingerprint.matcher import fingerprint
    from tests.conftest import tone_music

    from .conftest import encode_clip

    name = b"Caf\xe9/S01E01 \xff.mp3".decode("utf-8", "surrogateescape")
    audio = tone_music(20.0, 7)
    snapshot = tmp_path / "snapshot"
    episode = Episode(episode_id="cafe-s01e01", season="cafe-s01", show="cafe", source=name,
                      duration_s=20.0, sha256="0" * 64)  # fmt: skip
    write_shard(shard_path(snapshot, "cafe-s01"), season="cafe-s01", episodes=[episode],
                hashes=[fingerprint(audio, params=DEFAULT_PARAMS)], params=DEFAULT_PARAMS)  # fmt: skip
    server = start_server(str(snapshot), "--poll", "0")
    clip = encode_clip(audio[4 * 8000 : 9 * 8000], tmp_path / "c.mp3").read_bytes()
    with server.client() as http:
        episodes = http.get("/episodes")
        match = http.post("/match", files={"file": (b"\xe9t\xe9.mp3".decode("latin-1"), clip)})
    assert episodes.status_code == 200 and match.status_code == 200, match.text
    assert episodes.content.isascii()
    assert episodes.json()["episodes"][0]["source"] == name
    assert json.loads(match.content)["matches"][0]["source"] == name
    assert match.json()["query"] == "\u00e9t\u00e9.mp3"
