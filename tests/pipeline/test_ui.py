"""The Dagster UI in a real browser: `make dev`'s server on a materialised library, headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.embedded import prepare_dagster_home, run_pipeline_once

from .conftest import REPO, DevServer, Pipeline, graphql, start_dev_server

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "tests" / "artifacts"
ASSETS = (
    "source_media",
    "raw_audio",
    "fingerprints",
    "transcript",
    "segment_embeddings",
    "season_snapshot",
    "published_version",
)
LINEAGE = {
    ("source_media", "raw_audio"),
    ("raw_audio", "fingerprints"),
    ("raw_audio", "transcript"),
    ("transcript", "segment_embeddings"),
    ("fingerprints", "season_snapshot"),
    ("segment_embeddings", "season_snapshot"),
    ("season_snapshot", "published_version"),
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


def drawn_graph(dom: str) -> tuple[dict[str, float], set[tuple[str, str]]]:
    """Asset nodes (name -> left x) and the edges the lineage graph draws between them."""
    boxes: dict[str, tuple[float, float, float, float]] = {}  # left, right, top, bottom
    for chunk in dom.split("<foreignObject")[1:]:
        box = re.match(r'\s+x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', chunk)
        names = re.findall(r">(" + "|".join(ASSETS) + r")<", chunk.split("</foreignObject>")[0])
        if box and len(set(names)) == 1:
            x, y, w, h = (float(v) for v in box.groups())
            boxes[names[0]] = (x, x + w, y, y + h)
    edges = set()
    for x0, y0, x1, y1 in re.findall(
        r'<path d="M([\d.]+),([\d.]+)C[^"]*?([\d.]+),([\d.]+)" stroke="var\(--color-lineage-edge\)"',
        dom,
    ):
        # An edge leaves the right side of its source and ends just left of its target.
        src = [
            n
            for n, (_, right, top, bottom) in boxes.items()
            if abs(right - float(x0)) < 2 and top - 2 <= float(y0) <= bottom + 2
        ]
        dst = [
            n
            for n, (left, _, top, bottom) in boxes.items()
            if 0 <= left - float(x1) < 12 and top - 2 <= float(y1) <= bottom + 2
        ]
        if len(src) == len(dst) == 1:
            edges.add((src[0], dst[0]))
    return {n: b[0] for n, b in boxes.items()}, edges


@pytest.fixture
def dev_server(pipeline: Pipeline, tmp_path: Path) -> Iterator[DevServer]:
    """The pipeline run once in-process, then `make dev`'s server on the same home and instance."""
    with dg.DagsterInstance.from_config(
        str(prepare_dagster_home(pipeline.home / "dagster"))
    ) as instance:
        report = run_pipeline_once(pipeline.defs, instance)
    assert not report.failures and report.runs
    with start_dev_server(pipeline.home, pipeline.media, tmp_path / "dagster-dev.log") as server:
        yield server


def test_the_ui_shows_the_assets_and_their_lineage(dev_server: DevServer) -> None:
    nodes = graphql(
        dev_server.base, "{ assetNodes { assetKey { path } dependencyKeys { path } } }"
    )["assetNodes"]
    served = {(d["path"][0], n["assetKey"]["path"][0]) for n in nodes for d in n["dependencyKeys"]}
    assert served == LINEAGE

    # Everything is within three steps of the season's shard, up or down.
    lineage_url = f"{dev_server.base}/assets/season_snapshot?view=lineage&lineageDepth=3"
    dom = browse(lineage_url)
    left, edges = drawn_graph(dom)
    assert set(left) == set(ASSETS), f"asset nodes drawn: {sorted(left)}"
    assert all(left[a] < left[b] for a, b in LINEAGE), left  # drawn left to right
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
