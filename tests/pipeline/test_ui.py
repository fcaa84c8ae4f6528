"""The Dagster UI in a real browser: `make dev`'s server on a materialised library, headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, Pipeline, free_port, stop_process_group

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "tests" / "artifacts"
ASSETS = ("source_media", "raw_audio", "fingerprints", "season_snapshot")
LINEAGE = {
    ("source_media", "raw_audio"),
    ("raw_audio", "fingerprints"),
    ("fingerprints", "season_snapshot"),
}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "the UI test needs Debian's chromium: `make browser-deps` (apt-get install chromium)"
        )
    return found


def browse(url: str, *, screenshot: Path | None = None) -> str:
    """Load ``url`` in headless Chromium; the rendered DOM, or "" after writing a screenshot."""
    with tempfile.TemporaryDirectory(prefix="citywok-chromium-") as profile:
        cmd = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,900",
            "--virtual-time-budget=15000", "--hide-scrollbars",
            f"--screenshot={screenshot}" if screenshot else "--dump-dom", url,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def drawn_graph(dom: str) -> tuple[dict[str, float], set[tuple[str, str]]]:
    """Asset nodes (name -> left x) and the edges the lineage graph draws between them."""
    nodes: dict[str, tuple[float, float]] = {}
    for chunk in dom.split("<foreignObject")[1:]:
        box = re.match(r'\s+x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', chunk)
        names = re.findall(r">(" + "|".join(ASSETS) + r")<", chunk.split("</foreignObject>")[0])
        if box and len(set(names)) == 1:
            nodes[names[0]] = (float(box.group(1)), float(box.group(1)) + float(box.group(2)))
    edges = set()
    for start, end in re.findall(
        r'<path d="M([\d.]+),[\d.]+C[^"]*?([\d.]+),[\d.]+" stroke="var\(--color-lineage-edge\)"',
        dom,
    ):
        src = [n for n, (_, right) in nodes.items() if abs(right - float(start)) < 2]
        dst = [n for n, (left, _) in nodes.items() if 0 <= left - float(end) < 12]
        if len(src) == len(dst) == 1:
            edges.add((src[0], dst[0]))
    return {n: left for n, (left, _) in nodes.items()}, edges


@dataclass(frozen=True)
class DevServer:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


def _ignore_sigint() -> None:
    # What `cmd &` in a non-interactive shell does to its child: the trap make dev must survive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def dev_server(pipeline: Pipeline, tmp_path: Path) -> Iterator[DevServer]:
    """The pipeline run once in-process, then `python -m citywok_pipeline.devserver` on its home."""
    home = pipeline.home
    # The UI reads the instance `make dev` uses: $CITYWOK_HOME/dagster.
    import dagster as dg

    from citywok_pipeline.embedded import prepare_dagster_home, run_pipeline_once

    with dg.DagsterInstance.from_config(str(prepare_dagster_home(home / "dagster"))) as instance:
        report = run_pipeline_once(pipeline.defs, instance)
    assert not report.failures and report.runs
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CITYWOK_BUCKET_URL")}
    env.update(CITYWOK_HOME=str(home), CITYWOK_MEDIA_ROOT=str(pipeline.media))
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citywok_pipeline.devserver", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_ignore_sigint,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, f"dagster dev exited early:\n{log.read_text()[-3000:]}"
            try:
                nodes = graphql(base, "{ assetNodes { assetKey { path } } }")["assetNodes"]
                if len(nodes) == len(ASSETS):
                    break
            except (OSError, KeyError, TypeError, ValueError):
                pass
            assert time.monotonic() < deadline, (
                f"the UI did not load the code location:\n{log.read_text()[-3000:]}"
            )
            time.sleep(1)
        yield DevServer(base, proc, log)
    finally:
        stop_process_group(proc)


def test_the_ui_shows_the_assets_and_their_lineage(dev_server: DevServer) -> None:
    nodes = graphql(
        dev_server.base, "{ assetNodes { assetKey { path } dependencyKeys { path } } }"
    )["assetNodes"]
    served = {(d["path"][0], n["assetKey"]["path"][0]) for n in nodes for d in n["dependencyKeys"]}
    assert served == LINEAGE

    lineage_url = f"{dev_server.base}/assets/fingerprints?view=lineage&lineageDepth=3"
    dom = browse(lineage_url)
    left, edges = drawn_graph(dom)
    assert set(left) == set(ASSETS), f"asset nodes drawn: {sorted(left)}"
    assert sorted(left, key=left.__getitem__) == list(ASSETS)
    assert edges == LINEAGE
    assert "Join the Dagster community" not in dom

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, url in (
        ("ui-asset-lineage.png", lineage_url),
        (
            "ui-asset-groups.png",
            f"{dev_server.base}/locations/citywok_pipeline/asset-groups/videos",
        ),
    ):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        browse(url, screenshot=shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_dev_server_stops_on_sigint_even_when_started_in_the_background(
    dev_server: DevServer,
) -> None:
    pid = dev_server.proc.pid
    ignored = int(
        re.search(r"SigIgn:\s+([0-9a-f]+)", Path(f"/proc/{pid}/status").read_text()).group(1), 16
    )  # type: ignore[union-attr]
    assert not ignored & (1 << (signal.SIGINT - 1)), (
        "SIGINT is still ignored after the wrapper's exec"
    )
    os.kill(pid, signal.SIGINT)
    try:
        dev_server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dagster dev ignored SIGINT:\n{dev_server.log.read_text()[-2000:]}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    pytest.fail("dagster dev's webserver, daemon or code server outlived it")
