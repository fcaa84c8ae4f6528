"""Bad input through the query server: every hostile upload to POST /match and every bad query
to GET /search gets a clear 4xx naming the problem (never a 5xx or a traceback), and nothing
the server serves changes (its bucket and pull folder hashed before and after)."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import FaultFigures, Library, citywok, hostile_inputs, tree_digest
from .serving import Published, Server, publish_and_pull, running_server, worker_peak_rss_mb

pytestmark = pytest.mark.slow

MAX_UPLOAD = 2_000_000
BOUNDARY = b"citywok-faults-boundary"


@dataclass(frozen=True)
class Served:
    server: Server
    published: Published
    library: Library


@pytest.fixture(scope="module")
def served(library: Library, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("uploads")
    published = publish_and_pull(library.snapshot, work)
    with running_server(published.served, "--poll", "0", "--workers", "1",
                        "--max-upload", str(MAX_UPLOAD), "--max-clip", "30",
                        "--decode-timeout", "10", log=work / "serve.log") as server:  # fmt: skip
        yield Served(server, published, library)


def multipart(name: bytes, data: bytes, field: bytes = b"file") -> bytes:
    return (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"" + field
            + b"\"; filename=\"" + name + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            + data + b"\r\n--" + BOUNDARY + b"--\r\n")  # fmt: skip


def raw_post(server: Server, body: bytes | None, headers: dict[str, str],
             chunks: Iterator[bytes] | None = None) -> tuple[int, dict]:  # fmt: skip
    """POST /match over a plain socket (file names as raw bytes, chunked bodies): the status
    and the JSON answer."""
    host, port = server.url.removeprefix("http://").split(":")
    head = [b"POST /match HTTP/1.1", b"Host: " + host.encode(),
            b"Content-Type: multipart/form-data; boundary=" + BOUNDARY]  # fmt: skip
    head += [f"{k}: {v}".encode() for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        framed = (
            [body] if body else [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks or ()]
        )
        for piece in framed:
            # Stop sending once the server has answered (it does not read the rest).
            if select.select([s], [], [], 0)[0]:
                break
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"content-length: *(\d+)", data[:head_end].lower())
                if m and len(data) - head_end - 4 >= int(m.group(1)):
                    break
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2])


def ten_hours_of_silence(folder: Path, *, damaged: bool) -> Path:
    """A decompression bomb: 10 hours of audio in 16 kB of FLAC (the first frame damaged:
    in-process decoding gives up on it and the ffmpeg command skips the damage)."""
    path = folder / ("bomb-damaged.flac" if damaged else "bomb.flac")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=1000:cl=mono", "-t", "36000", "-c:a", "flac",
                    "-frame_size", "65535", "-strict", "-2", str(path)], check=True)  # fmt: skip
    if damaged:
        data = bytearray(path.read_bytes())
        first = data.find(b"\xff\xf8")
        data[first + 16 : first + 32] = bytes(range(16))
        path.write_bytes(bytes(data))
    return path


def stored(s: Served) -> dict[str, str]:
    return tree_digest(s.published.bucket.root, s.published.served, s.library.snapshot)


def test_hostile_uploads_to_match_each_get_a_clear_4xx_and_change_nothing(
    served: Served, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    before = stored(served)
    server = served.server
    cases: list[tuple[str, int, str, object]] = []  # kind, status, detail pattern, response

    def post(kind: str, status: int, pattern: str, name: str, data: bytes) -> None:
        with server.client() as http:
            r = http.post("/match", files={"file": (name, data)})
        cases.append((kind, status, pattern, (r.status_code, r.json())))

    for h in hostile_inputs(tmp_path / "clips", good=served.library.files[0]):
        if h.kind == "empty":
            post(h.kind, 400, r"empty\.mp3: the upload is empty", h.path.name, b"")
        else:
            post(h.kind, 415, re.escape(h.path.name) + ": " + h.reason, h.path.name,
                 h.path.read_bytes())  # fmt: skip
    declared = str(MAX_UPLOAD + 200_000)  # refused on its headers: the body is never sent
    cases.append(("over the limit (Content-Length)", 413, r"the limit is 2000000 bytes",
                  raw_post(server, None, {"Content-Length": declared})))  # fmt: skip
    chunks = iter([multipart(b"huge.wav", b"")[: -(len(BOUNDARY) + 8)]] + [b"\0" * 65536] * 3000)
    cases.append(("chunked oversize (no Content-Length)", 413, r"the limit is 2000000 bytes",
                  raw_post(server, None, {"Transfer-Encoding": "chunked"}, chunks)))  # fmt: skip
    with server.client() as http:
        for kind, r in (
            ("no file field", http.post("/match", files={"clip": ("a.mp3", b"abc")})),
            ("not a form", http.post("/match", content=b"ID3\x03", headers={"Content-Type": "audio/mpeg"})),
            ("no body", http.post("/match")),
        ):  # fmt: skip
            cases.append(
                (kind, 400, r"multipart/form-data|no field 'file'", (r.status_code, r.json()))
            )
    for kind, status, pattern, (code, answer) in cases:  # type: ignore[misc]
        assert code == status, f"{kind}: {code} {answer}"
        assert re.search(pattern, answer["detail"]), f"{kind}: {answer['detail']}"
    assert stored(served) == before
    assert "Traceback" not in server.log_text()
    fault_figures.add("bad input", "POST /match", inputs=len(cases), clear_errors=len(cases),
                      artefacts_changed=0, server_errors=0)  # fmt: skip


def test_decompression_bombs_cost_only_max_clip_seconds(
    served: Served, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    # 10 hours in 70 kB, through libav in the worker and, damaged, through the ffmpeg
    # command after it: 30 s (--max-clip) of silence are decoded, which match nothing.
    before = stored(served)
    for damaged in (False, True):
        bomb = ten_hours_of_silence(tmp_path, damaged=damaged)
        with served.server.client() as http:
            r = http.post("/match", files={"file": (bomb.name, bomb.read_bytes())})
        assert r.status_code == 200, r.text
        assert r.json()["matches"] == []
    # 10 hours of float32 samples would be 1.1 GB (and the ffmpeg command's output as much).
    assert worker_peak_rss_mb(served.server) < 600
    assert stored(served) == before
    fault_figures.add("bad input", "POST /match decompression bomb", inputs=2, survived=2,
                      crashes=0)  # fmt: skip


def test_non_utf8_and_traversal_names_are_labels_never_paths(
    served: Served, tmp_path: Path, fault_figures: FaultFigures
) -> None:
    good = served.library.files[0].read_bytes()
    before = stored(served)
    outside = tmp_path / "escaped.mp3"
    names = [b"caf\xe9 \xff\xfe.mp3", b"../../" + str(outside).encode().lstrip(b"/"),
             b"/etc/passwd", b"..\\..\\boot.ini", b"a\x00b.mp3", b"x" * 1000]  # fmt: skip
    for name in names:
        code, answer = raw_post(served.server, body := multipart(name, good),
                                {"Content-Length": str(len(body))})  # fmt: skip
        assert code == 200, (name, answer)
        assert answer["matches"], (name, answer)
        assert len(answer["query"]) <= 255
    # A part header past python-multipart's limit is a malformed form.
    code, answer = raw_post(served.server, body := multipart(b"x" * 20000, good),
                            {"Content-Length": str(len(body))})  # fmt: skip
    assert code == 400 and "header size" in answer["detail"]
    assert not outside.exists()
    assert stored(served) == before
    fault_figures.add("bad input", "POST /match file names", inputs=len(names) + 1,
                      survived=len(names) + 1, artefacts_changed=0)  # fmt: skip


def test_bad_queries_to_search_get_a_clear_4xx(served: Served, fault_figures: FaultFigures) -> None:
    before = stored(served)
    queries = [
        {"q": "where", "keyword": ".*"}, {"q": "where", "keyword": ""}, {"q": ""},
        {"q": "   "}, {"q": "where", "limit": "0"}, {"q": "where", "limit": "-1"},
        {"q": "where", "limit": "ten"}, {"q": "where", "limit": str(10**12)},
        {"q": "x" * 6000}, {"q": "nul\x00 and \x1b[31m escapes"}, {},
    ]  # fmt: skip
    with served.server.client() as http:
        answers = [http.get("/search", params=q) for q in queries]
        raw = http.get("/search?q=%ff%fe&keyword=%c3")
    for q, r in [*zip(queries, answers, strict=True), ("%ff", raw)]:
        assert 400 <= r.status_code < 500, (q, r.status_code, r.text)
        assert r.json()["detail"], q
    assert answers[0].status_code == 400 and "letter or a digit" in answers[0].json()["detail"]
    assert stored(served) == before
    assert "Traceback" not in served.server.log_text()
    fault_figures.add("bad input", "GET /search", inputs=len(queries) + 1,
                      clear_errors=len(queries) + 1, server_errors=0)  # fmt: skip


def test_an_episode_whose_file_name_is_not_utf8_is_listed_and_matched(
    tmp_path: Path, fault_figures: FaultFigures
) -> None:
    from .conftest import build_media

    media = tmp_path / "media"
    (path,) = build_media(media, seasons=1, episodes=1, seed=3)
    odd = path.with_name(os.fsdecode(b"Show - S01E01 caf\xe9.flac"))
    path.rename(odd)
    result = citywok("index", media, "--snapshot", tmp_path / "snapshot", "--fingerprints-only",
                     "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    with running_server(tmp_path / "snapshot", "--poll", "0", "--workers", "1",
                        log=tmp_path / "serve.log") as server, server.client() as http:  # fmt: skip
        episodes = http.get("/episodes")
        r = http.post("/match", files={"file": ("clip.flac", odd.read_bytes())})
    assert episodes.status_code == 200 and r.status_code == 200, (episodes.text, r.text)
    source = os.fsencode(episodes.json()["episodes"][0]["source"])
    assert source.endswith(b"caf\xe9.flac")
    assert os.fsencode(r.json()["matches"][0]["source"]) == source
    fault_figures.add("bad input", "non-UTF-8 episode name", inputs=2, survived=2)


def test_a_client_hanging_up_mid_upload_is_logged_as_a_400_not_a_crash(
    served: Served, fault_figures: FaultFigures
) -> None:
    host, port = served.server.url.removeprefix("http://").split(":")
    body = multipart(b"cut.mp3", b"\0" * 100_000)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /match HTTP/1.1\r\nHost: x\r\nX-Request-ID: hung-up\r\n"
                  b"Content-Type: multipart/form-data; boundary=" + BOUNDARY
                  + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:5000])  # fmt: skip
    from .conftest import wait_until

    def logged() -> list[dict]:
        lines = [json.loads(x) for x in served.server.log_text().splitlines() if x.startswith("{")]
        return [r for r in lines if r.get("request_id") == "hung-up" and "status" in r]

    assert wait_until(lambda: bool(logged()), timeout_s=20)
    assert logged()[0]["status"] == 400
    assert "Traceback" not in served.server.log_text()
    with served.server.client() as http:
        assert http.get("/healthz").status_code == 200
    fault_figures.add("bad input", "POST /match cut off by the client", inputs=1, survived=1)
