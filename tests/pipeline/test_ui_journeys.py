"""The design card's four journeys, clicked through the Dagster UI.

`make dev`'s server (``python -m citywok_pipeline.devserver --port PORT`` on a free port) on the
tiny library, materialised once in-process; Playwright from PyPI drives Debian's chromium
(``executable_path``, never ``playwright install``). Every step waits on what the UI shows
(Playwright's auto-waiting and ``expect``), never on a sleep; each step leaves a screenshot in
``tests/artifacts/ui/``; a browser console error or an uncaught page error fails the test.

- (a) lineage: the global asset graph, every asset and edge, then raw_audio's waveform;
- (b) materialise: one fingerprints partition from its launch dialog, the run to success;
- (c) backfills: two partitions launched as a backfill, its progress and end on the Backfills
  tab; then the nightly catch-up (its cron set to every minute, its sensor switched on from the
  UI) retries the partitions a failed night left, as one backfill listed the same way;
- (d) ingestion: an episode dropped into a season folder; the sensor's tick, the partition, its
  run, the season's rebuilt shard and a new published version, each found in the UI;
- (e) cancel (the issue's bad input): a backfill of two videos' assets and their season's
  shard, cancelled from its page while a run is mid-step; nothing half-written is left, the
  catalog points only at whole artefacts, and the same backfill again builds what an
  uninterrupted one built, byte for byte.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from citywok_pipeline.artefacts import data_version, unpack_fingerprints
from citywok_pipeline.assets.partitions import (
    SHARDS_PREFIX,
    fingerprints_key,
    raw_audio_key,
    segment_embeddings_key,
    shard_key,
    transcript_key,
)
from citywok_pipeline.blobstore import LocalBlobStore
from citywok_pipeline.catalog import ScanPlan, open_catalog
from citywok_pipeline.embedded import prepare_dagster_home, run_pipeline_once
from citywok_pipeline.files import file_sha256
from citywok_pipeline.resources import ArtefactStore
from citywok_pipeline.snapshot import open_shard, verify_shard
from citywok_pipeline.transcripts.artefact import pack_transcript, unpack_transcript
from citywok_pipeline.transcripts.embeddings import pack_embeddings, unpack_embeddings

from .conftest import REPO, SPARE, DevServer, Pipeline, graphql, start_dev_server

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")  # Debian's, from `make browser-deps`
ARTIFACTS = REPO / "tests" / "artifacts" / "ui"
# Generous: CI is a busy 2-core machine, and a run starts a process that loads the code.
STEP_MS = 60_000
RUN_MS = 240_000
LOCATION = {"repositoryLocationName": "citywok_pipeline", "repositoryName": "__repository__"}

# The nightly catch-up's partitions: their fingerprints runs failed before the server started.
FAILED_NIGHT = ("the-night-kitchen-s01e01", "the-night-kitchen-s01e02")
PICKED = "harbour-lights-s01e01"  # journey (b)
BACKFILLED = ("harbour-lights-s01e01", "harbour-lights-s01e02")  # journey (c)
NEW_EPISODE = "harbour-lights-s01e03"  # journey (d): the spare episode of the tiny library
NEW_SEASON = "harbour-lights-s01"

# Browser console messages that are not errors of the UI under test. Each with its reason.
BENIGN_CONSOLE = (
    # Apollo aborts the queries of a page the test leaves while they are in flight (Apollo's
    # error 43/85, "query cancelled"); they come as warnings, listed in case a build logs them
    # as errors.
    re.compile(r"go\.apollo\.dev/c/err.*%22message%22%3A(43|85)%2C"),
)


@dataclass(frozen=True)
class Served:
    """The dev server, the library it watches and the spare episode kept aside for (d)."""

    server: DevServer
    media: Path
    home: Path
    spare: Path
    spare_relative: str
    tmp: Path  # the server's TMPDIR: its steps' temp folders (a shard is built in one)


def _sensor(base: str, name: str) -> dict[str, Any]:
    query = """query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
        __typename ... on Sensor { sensorState { id status ticks(limit: 1) { status } } } } }"""
    found = graphql(base, query, {"selector": {**LOCATION, "sensorName": name}})["sensorOrError"]
    assert found["__typename"] == "Sensor", found
    return found["sensorState"]  # type: ignore[no-any-return]


def _fail_fingerprints(defs: dg.Definitions, instance: dg.DagsterInstance, catalog: Path) -> None:
    """A night with failures: real failed fingerprints runs of ``FAILED_NIGHT`` (each video is
    marked removed for its run, then put back as it was)."""
    records = {v.episode_id: v for v in open_catalog(catalog).videos()}
    open_catalog(catalog).apply_scan(ScanPlan(removed=FAILED_NIGHT), now="2026-01-01T00:00:00Z")
    job = dg.define_asset_job("failed_night", selection=["fingerprints"])
    failing = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name)
    for key in FAILED_NIGHT:
        run = failing.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
        assert not run.success
    open_catalog(catalog).apply_scan(
        ScanPlan(upserts=tuple(records[k] for k in FAILED_NIGHT)), now="2026-01-01T00:00:00Z"
    )
    assert not any(v.removed for v in open_catalog(catalog).videos(include_removed=True))


@pytest.fixture(scope="module")
def served(tiny_library_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The tiny library materialised in-process (two fingerprints runs failed after), then
    `make dev`'s server on the same home and instance, the catch-up's sensor stopped."""
    root = tmp_path_factory.mktemp("ui-journeys")
    media = root / "media"
    shutil.copytree(tiny_library_source, media, ignore=shutil.ignore_patterns(f"*{SPARE}*"))
    spare = sorted(tiny_library_source.rglob(f"*{SPARE}*"))[0]
    relative = spare.relative_to(tiny_library_source).as_posix()
    assert relative.startswith("Harbour Lights/"), relative
    home = root / "citywok"
    tmp = root / "tmp"
    tmp.mkdir()
    with dg.DagsterInstance.from_config(str(prepare_dagster_home(home / "dagster"))) as instance:
        pipeline = Pipeline(media, home, ArtefactStore(bucket_url=home.as_uri()), instance)
        report = run_pipeline_once(pipeline.defs, instance)
        assert not report.failures and report.runs
        _fail_fingerprints(pipeline.defs, instance, pipeline.catalog_path)
    env = {
        # One process per run, every step in it: the models load once per run.
        "CITYWOK_EXECUTOR": "in_process",
        # The catch-up on every minute instead of 03:00 (its sensor evaluates once a minute).
        "CITYWOK_CATCH_UP_CRON": "* * * * *",
        "CITYWOK_PUBLISH_EVERY_MINUTES": "1",
        # The steps' temp folders where journey (e) can look for what a cancelled one left.
        "TMPDIR": str(tmp),
    }
    with start_dev_server(home, media, root / "dagster-dev.log", extra_env=env) as server:
        # The catch-up sensor's first evaluation only records when it ran (a cron tick counts
        # from the one before); then it is stopped, for journey (c) to switch it on.
        deadline = time.monotonic() + 120
        while not _sensor(server.base, "video_catch_up_sensor")["ticks"]:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(1)
        _stop_sensor_between_ticks(server, "video_catch_up_sensor")
        yield Served(server, media, home, spare, relative, tmp)


def _stop_sensor_between_ticks(server: DevServer, name: str) -> None:
    """Stop a sensor while no tick of it is in flight, and see it stopped.

    At the end of a tick the daemon writes the sensor's state back (its cursor) from a copy it
    read just before, and a stop that lands in between is lost: the sensor runs on (one CI run
    on a busy machine saw it). Between ticks, with the next a minimum interval away, nothing
    writes over a stop; one that was lost anyway is made again."""
    deadline = time.monotonic() + 180
    while True:
        state = _sensor(server.base, name)
        ticking = bool(state["ticks"]) and state["ticks"][0]["status"] == "STARTED"
        if not ticking and state["status"] == "STOPPED":
            return
        assert time.monotonic() < deadline, (state, server.log.read_text()[-3000:])
        if not ticking:
            stopped = graphql(
                server.base,
                "mutation ($id: String!) { stopSensor(id: $id) { __typename } }",
                {"id": state["id"]},
            )["stopSensor"]
            assert stopped["__typename"] == "StopSensorMutationResult", stopped
        time.sleep(0.5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"the UI journeys need Debian's chromium at {CHROMIUM}: `make browser-deps` "
            "(apt-get install chromium)"
        )
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield launched
        finally:
            launched.close()


class Journey:
    """A browser page on the served UI: numbered screenshots, console errors collected."""

    def __init__(self, page: Any, base: str, name: str) -> None:
        self.page = page
        self.base = base
        self.name = name
        self.errors: list[str] = []
        self._shots = 0
        page.set_default_timeout(STEP_MS)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in BENIGN_CONSOLE):
            self.errors.append(f"console error: {message.text} ({message.location})")

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, what: str) -> Path:
        self._shots += 1
        path = ARTIFACTS / f"{self.name}-{self._shots:02d}-{what}.png"
        self.page.screenshot(path=str(path))
        return path

    def button(self, name: str | re.Pattern[str], *, exact: bool = False) -> Any:
        return self.page.get_by_role("button", name=name, exact=exact)

    def reload_until_visible(self, locator: Any, timeout_ms: int) -> None:
        """Wait for ``locator`` on a page that does not refetch by itself (an asset's partition
        and its metadata), reloading it between waits."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            try:
                expect(locator).to_be_visible(timeout=15_000)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                self.page.reload()

    def feed_row(self, text: str) -> Any:
        """A row of a virtualised list (runs, backfills) that shows ``text``."""
        return self.page.locator("div[data-index]").filter(has_text=text)

    def metadata_row(self, key: str) -> Any:
        """The row of ``key`` in a metadata table."""
        return self.page.get_by_role("row").filter(
            has=self.page.get_by_role("cell", name=key, exact=True)
        )

    def metadata_value(self, key: str, value: str) -> Any:
        """The cell that reads exactly ``value`` in the row of ``key`` of a metadata table."""
        return self.metadata_row(key).first.get_by_role("cell", name=value, exact=True)


@pytest.fixture
def journey(served: Served, browser: Any, request: pytest.FixtureRequest) -> Iterator[Journey]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name.removeprefix("test_").split("_")[0]
    for old in ARTIFACTS.glob(f"{name}-*.png"):
        old.unlink()
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    expect.set_options(timeout=STEP_MS)
    try:
        j = Journey(context.new_page(), served.server.base, name)
        yield j
        j.shot("end")  # where the journey ended: its last page, also when it failed
        assert not j.errors, "the browser logged errors:\n" + "\n".join(j.errors)
    finally:
        context.close()


# ----------------------------------------------------------------------------------------------
# The journeys, in the order a new user would take them.


def drawn_graph(dom: str, assets: set[str]) -> tuple[dict[str, float], set[tuple[str, str]]]:
    """Asset nodes (name -> left x) and the edges the lineage graph draws between them."""
    boxes: dict[str, tuple[float, float, float, float]] = {}  # left, right, top, bottom
    names_re = re.compile(r">(" + "|".join(sorted(assets)) + r")<")
    for chunk in dom.split("<foreignObject")[1:]:
        box = re.match(r'\s+x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', chunk)
        names = names_re.findall(chunk.split("</foreignObject>")[0])
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


def test_a_lineage_shows_every_asset_and_edge_and_raw_audio_its_waveform(
    served: Served, journey: Journey
) -> None:
    nodes = graphql(
        served.server.base, "{ assetNodes { assetKey { path } dependencyKeys { path } } }"
    )["assetNodes"]
    assets = {n["assetKey"]["path"][0] for n in nodes}
    lineage = {(d["path"][0], n["assetKey"]["path"][0]) for n in nodes for d in n["dependencyKeys"]}
    assert {"source_media", "raw_audio", "published_version"} <= assets and len(lineage) >= 7

    page = journey.page
    journey.goto("/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    expect(journey.button(re.compile(r"Materialize all"))).to_be_visible()
    journey.shot("groups")
    # The graph opens with its groups collapsed: its settings menu expands them.
    journey.button("settings", exact=True).click()
    page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
    graph = page.locator("foreignObject")
    for asset in sorted(assets):
        expect(graph.get_by_text(asset, exact=True)).to_be_visible()
    journey.shot("graph")
    left, edges = drawn_graph(page.content(), assets)
    assert set(left) == assets, f"asset nodes drawn: {sorted(left)}"
    assert edges == lineage, f"drawn {sorted(edges)}, served {sorted(lineage)}"
    assert all(left[a] < left[b] for a, b in lineage), left  # drawn left to right

    graph.get_by_text("raw_audio", exact=True).click()
    page.get_by_role("link", name="View in Asset Catalog").click()
    page.wait_for_url(re.compile(r"/assets/raw_audio"))
    row = journey.metadata_row("waveform")
    expect(row).to_be_visible()
    journey.shot("raw-audio")
    row.get_by_text("[Show Markdown]").click()
    waveform = page.get_by_role("dialog").get_by_role("img", name="waveform")
    expect(waveform).to_be_visible()
    width, height = waveform.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 100 and height > 10, (width, height)  # a decoded image, not a broken one
    journey.shot("waveform")


def _choose_partitions(journey: Journey, asset: str, keys: tuple[str, ...]) -> Any:
    """Open ``asset``'s launch dialog from its page and pick ``keys``; the dialog."""
    page = journey.page
    journey.goto(f"/assets/{asset}")
    journey.button(re.compile(r"Materialize…")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Launch runs to materialize {asset}")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    for key in keys:
        page.get_by_placeholder("Filter partitions").fill(key)
        page.locator("label").filter(has_text=key).click()
    page.keyboard.press("Escape")  # closes the partition list, not the dialog
    count = f"{len(keys)} partition" + ("s" if len(keys) > 1 else "")
    expect(dialog.get_by_text(count, exact=True)).to_be_visible()
    return dialog


def test_b_one_partition_is_materialised_from_its_launch_dialog(journey: Journey) -> None:
    page = journey.page
    dialog = _choose_partitions(journey, "fingerprints", (PICKED,))
    journey.shot("launch-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    expect(page.get_by_text("Launched run")).to_be_visible()
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    expect(page.get_by_text(f"partition: {PICKED}")).to_be_visible()
    journey.shot("run")
    expect(page.get_by_text("RUN_SUCCESS")).to_be_visible(timeout=RUN_MS)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    journey.shot("run-succeeded")


def _backfill_finished(journey: Journey, partitions: tuple[str, ...]) -> None:
    """On a backfill's page: its progress, then 100% with every partition succeeded."""
    page = journey.page
    expect(page.get_by_text(re.compile(r"^\d+% completed$")).first).to_be_visible()
    journey.shot("backfill-progress")
    expect(page.get_by_text("100% completed").first).to_be_visible(timeout=RUN_MS)
    status = page.get_by_text("Status", exact=True).locator("..")
    expect(status).to_contain_text("Succeeded")
    for key in partitions:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    journey.shot("backfill-finished")


def _backfills_tab(journey: Journey, backfill_id: str) -> Any:
    """Runs, then the Backfills tab; the row of ``backfill_id``."""
    page = journey.page
    page.get_by_role("link", name=re.compile(r"^runs Runs$|^Runs$")).first.click()
    page.get_by_role("tab", name="Backfills").click()
    row = journey.feed_row(backfill_id)
    expect(row).to_be_visible()
    return row


def test_c_a_backfill_from_the_ui_and_the_nightly_catch_up_are_listed_as_backfills(
    served: Served, journey: Journey
) -> None:
    page = journey.page
    dialog = _choose_partitions(journey, "fingerprints", BACKFILLED)
    journey.shot("launch-dialog")
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(page.get_by_text("Created backfill")).to_be_visible()
    page.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/b/[a-z]+"))
    backfill = page.url.rstrip("/").split("/")[-1].split("?")[0]
    expect(page.get_by_text(re.compile(r"^\d+% completed$")).first).to_be_visible()
    journey.shot("backfill-progress")
    expect(_backfills_tab(journey, backfill)).to_contain_text("2 partitions")
    journey.shot("backfills-tab")

    # While it runs, the nightly catch-up: its sensor was stopped; switched on, its first
    # evaluation after a cron tick retries the partitions that failed, as one backfill.
    page.get_by_role("link", name=re.compile(r"Automation$")).first.click()
    page.get_by_role("link", name="video_catch_up_sensor").click()
    page.wait_for_url(re.compile(r"/sensors/video_catch_up_sensor"))
    switch = page.get_by_role("checkbox")
    expect(switch).not_to_be_checked()
    journey.shot("catch-up-stopped")
    page.locator("label", has=switch).click()
    expect(switch).to_be_checked()
    requested = page.get_by_text(re.compile(r"^[1-9]\d* \w+ requested$")).first
    expect(requested).to_be_visible(timeout=RUN_MS)
    journey.shot("catch-up-tick")
    # Off again, so that the next journey's partitions are the media sensor's alone.
    page.locator("label", has=switch).click()
    expect(switch).not_to_be_checked()
    _stop_sensor_between_ticks(served.server, "video_catch_up_sensor")  # a stop can be lost
    nightly = _nightly_backfill(served.server.base)  # by its tag; the UI must list it
    row = _backfills_tab(journey, nightly)
    expect(row).to_contain_text("video_catch_up_sensor")
    expect(row).to_contain_text("2 partitions")
    journey.shot("backfills-tab-nightly")

    # Both end, each with every partition succeeded, and are listed so.
    for backfill_id, partitions in ((backfill, BACKFILLED), (nightly, FAILED_NIGHT)):
        _backfills_tab(journey, backfill_id).get_by_role("link").filter(
            has_text=backfill_id
        ).click()
        page.wait_for_url(re.compile(rf"/runs/b/{backfill_id}"))
        _backfill_finished(journey, partitions)
    for backfill_id in (backfill, nightly):
        expect(_backfills_tab(journey, backfill_id)).to_contain_text("Success")
    journey.shot("backfills-tab-finished")


def _nightly_backfill(base: str) -> str:
    """The id of the backfill the catch-up's sensor launched (read to find its row)."""
    found = graphql(
        base,
        "{ partitionBackfillsOrError(limit: 20) { ... on PartitionBackfills "
        "{ results { id tags { key value } } } } }",
    )["partitionBackfillsOrError"]["results"]
    nightly = [
        b["id"] for b in found if {"key": "citywok/backfill", "value": "nightly"} in b["tags"]
    ]
    assert len(nightly) == 1, found
    return nightly[0]  # type: ignore[no-any-return]


def test_d_a_new_episode_is_ingested_rebuilt_and_published_with_nothing_clicked(
    served: Served, journey: Journey
) -> None:
    page = journey.page
    journey.goto("/assets/published_version")
    expect(journey.metadata_value("episodes", "4")).to_be_visible()
    journey.shot("published-before")

    shutil.copyfile(served.spare, served.media / served.spare_relative)

    journey.goto("/locations/citywok_pipeline/sensors/media_scan_sensor")
    expect(page.get_by_text(re.compile(r"^1 run requested$")).first).to_be_visible(timeout=RUN_MS)
    journey.shot("sensor-tick")

    journey.goto("/assets/raw_audio?view=partitions")
    expect(page.get_by_text(NEW_EPISODE, exact=True).first).to_be_visible()
    journey.shot("new-partition")

    journey.goto("/runs")
    run = journey.feed_row(NEW_EPISODE).first
    expect(run).to_be_visible()
    run.get_by_role("link").filter(has_text=re.compile(r"^[0-9a-f]{8}$")).first.click()
    expect(page.get_by_text(f"partition: {NEW_EPISODE}")).to_be_visible()
    journey.shot("video-run")
    expect(page.get_by_text("RUN_SUCCESS")).to_be_visible(timeout=RUN_MS)
    journey.shot("video-run-succeeded")

    journey.goto(f"/assets/season_snapshot?view=partitions&partition={NEW_SEASON}")
    journey.reload_until_visible(journey.metadata_value("video_count", "3"), RUN_MS)
    journey.shot("season-rebuilt")

    journey.goto("/assets/published_version")
    journey.reload_until_visible(journey.metadata_value("episodes", "5"), RUN_MS)
    journey.shot("published-after")


# ----------------------------------------------------------------------------------------------
# (e) Bad input: a backfill cancelled from the UI.

# The season's two videos and two of another season's: their transcripts take turns (the
# `gpu` pool), so three are still to run when a cancel comes during the first. The daemon acts
# on a cancel at its next backfill iteration, up to 30 s later: with the season's two alone,
# both runs ended before it once on a busy CI machine, and nothing was cancelled.
CANCELLED_VIDEOS = (
    "the-night-kitchen-s01e01", "the-night-kitchen-s01e02",
    "harbour-lights-s01e01", "harbour-lights-s01e02",
)  # fmt: skip
CANCELLED_SEASON = "the-night-kitchen-s01"
PER_VIDEO = ("raw_audio", "fingerprints", "transcript", "segment_embeddings")
# A long step (a model loaded, then run) with another after it: the cancel is sent while it runs.
LONG_STEP = "transcript"
IN_FLIGHT = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
# What the steps name their temp folders (tempfile.TemporaryDirectory(prefix=...)).
STEP_TEMP_FOLDERS = ("citywok-audio-", "citywok-flac-", "citywok-shard-", "citywok-check-")

_RUNS = """query ($filter: RunsFilter!) { runsOrError(filter: $filter) { ... on Runs { results {
    runId status tags { key value } stepStats { stepKey status } } } } }"""
_BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { status } } }"""
_STEP_FAILURES = """query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection {
    events { __typename ... on ExecutionStepFailureEvent { stepKey error { className message } }
    ... on ExecutionStepUpForRetryEvent { stepKey } } } } }"""


def _launch_backfill(base: str, title: str) -> str:
    """The videos' per-video assets and one season's shard, as one asset backfill (the
    UI's launch dialog takes one partitions definition; this is the GraphQL call it makes)."""
    videos = {"ranges": [{"start": k, "end": k} for k in CANCELLED_VIDEOS]}
    season = {"ranges": [{"start": CANCELLED_SEASON, "end": CANCELLED_SEASON}]}
    params = {
        "title": title,
        "partitionsByAssets": [
            *({"assetKey": {"path": [a]}, "partitions": videos} for a in PER_VIDEO),
            {"assetKey": {"path": ["season_snapshot"]}, "partitions": season},
        ],
    }
    launched = graphql(
        base,
        """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams:
        $params) { __typename ... on LaunchBackfillSuccess { backfillId }
        ... on PythonError { message } } }""",
        {"params": params},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]  # type: ignore[no-any-return]


def _runs(base: str, **filter: Any) -> list[dict[str, Any]]:
    return graphql(base, _RUNS, {"filter": filter})["runsOrError"]["results"]  # type: ignore[no-any-return]


def _backfill_runs(base: str, backfill_id: str) -> list[dict[str, Any]]:
    return _runs(base, tags=[{"key": "dagster/backfill", "value": backfill_id}])


def _backfill_status(base: str, backfill_id: str) -> str:
    found = graphql(base, _BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert found["__typename"] == "PartitionBackfill", found
    return found["status"]  # type: ignore[no-any-return]


def _wait_for(what: str, condition: Any, timeout_s: float, log: Path) -> Any:
    """``condition()``'s first truthy value, polled each second; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, (
            f"{what}: not after {timeout_s:g} s\n" + log.read_text()[-3000:]
        )
        time.sleep(1)
    return value


def _long_step_running(base: str, backfill_id: str) -> str | None:
    """The id of a started run of the backfill with its transcript in progress, while
    no transcript of the backfill has finished yet: the other videos' runs have at least their
    transcripts and embeddings still to do (the ``gpu`` pool runs one at a time)."""
    runs = _backfill_runs(base, backfill_id)
    stats = [(r, s) for r in runs for s in r["stepStats"] if s["stepKey"] == LONG_STEP]
    if len(runs) < len(CANCELLED_VIDEOS) or any(s["status"] != "IN_PROGRESS" for _, s in stats):
        return None
    running = [r["runId"] for r, s in stats if r["status"] == "STARTED"]
    return running[0] if running else None


def _stored(home: Path) -> dict[str, str]:
    """sha256 of every artefact and local shard copy (not the published versions, which the
    publish sensor may add to meanwhile)."""
    return {
        p.relative_to(home).as_posix(): file_sha256(p)
        for folder in (home / "artefacts", home / "snapshot")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _recorded(home: Path) -> dict[str, Any]:
    """What the catalog recorded of each video and season, less the times."""
    cat = open_catalog(home / "catalog.sqlite")
    videos = {
        v.episode_id: (v.sha256, v.duration_s, v.audio_version, v.fingerprints_version,
                       v.embeddings_version)
        for v in cat.videos()
    }  # fmt: skip
    return {**videos, **{s: (b.inputs, b.shard_version) for s, b in cat.season_builds().items()}}


def _dead_temps(root: Path) -> list[str]:
    """Hidden temp files under ``root`` no live writer holds: what a stopped writer left."""
    left = []
    for p in sorted(root.rglob(".*.tmp")):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # renamed into place or removed meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            left.append(p.relative_to(root).as_posix())
        except BlockingIOError:  # its writer holds it: a write in progress
            pass
        finally:
            os.close(fd)
    return left


def _inconsistencies(served: Served, scratch: Path) -> list[str]:
    """What is half-written or dangling: temp files and temp folders left, a catalog record
    whose artefact is missing or fails its check, a stored shard that fails verification or
    does not hold what the catalog says went into it."""
    home = served.home
    store = LocalBlobStore(home / "artefacts")
    problems = [f"temp file left: {t}" for t in _dead_temps(home)]
    problems += [
        f"temp folder left: {p.name}"
        for p in sorted(served.tmp.iterdir())
        if p.name.startswith(STEP_TEMP_FOLDERS)
    ]

    def blob(key: str) -> bytes | None:
        if not store.exists(key):
            problems.append(f"the catalog points at {key}, which is missing")
            return None
        return store.get(key)

    cat = open_catalog(home / "catalog.sqlite")
    for v in cat.videos():
        eid = v.episode_id
        flac = blob(raw_audio_key(eid)) if v.audio_version else None
        if flac is not None and data_version(flac) != v.audio_version:
            problems.append(f"{raw_audio_key(eid)} is not the audio the catalog recorded")
        if v.fingerprints_version and (fp := blob(fingerprints_key(eid))) is not None:
            try:
                if unpack_fingerprints(fp).data_version != v.fingerprints_version:
                    problems.append(f"{fingerprints_key(eid)} is not the version recorded")
            except ValueError as exc:
                problems.append(str(exc))
        if v.embeddings_version and (se := blob(segment_embeddings_key(eid))) is not None:
            try:
                emb = unpack_embeddings(se)
                if pack_embeddings(emb)[1] != v.embeddings_version:
                    problems.append(f"{segment_embeddings_key(eid)} is not the version recorded")
                tr = blob(transcript_key(eid))
                if (
                    tr is not None
                    and pack_transcript(unpack_transcript(tr))[1] != emb.transcript_version
                ):
                    problems.append(f"{transcript_key(eid)} is not what was embedded")
            except ValueError as exc:
                problems.append(str(exc))

    builds = cat.season_builds()
    shards = {o.key for o in store.list(SHARDS_PREFIX)}
    for season, build in builds.items():
        if build.inputs and shard_key(season) not in shards:
            problems.append(f"the catalog points at {shard_key(season)}, which is missing")
    for key in sorted(shards):
        copy = scratch / key.replace("/", "_")  # opened away from the store: LMDB adds a lock
        copy.write_bytes(store.get(key))
        if found := verify_shard(copy):
            problems.append(f"{key} fails verification: {found}")
            continue
        shard = open_shard(copy)
        try:
            went_in = shard.meta.get("extra", {}).get("videos", {})
        finally:
            shard.close()
        season = key.removeprefix(SHARDS_PREFIX).removesuffix(".lmdb")
        build = builds.get(season)
        if build is None or went_in != build.inputs:
            problems.append(f"{key} holds {went_in}, the catalog recorded {build}")
    return problems


CANCEL_ATTEMPTS = 3


def _cancel_from_the_ui(journey: Journey, base: str, log: Path) -> tuple[str, str, float]:
    """A backfill launched, then cancelled from its page while a run's long step is in
    progress, until the page says Canceled: its id, that run's and when Cancel was clicked."""
    page = journey.page
    backfill = _launch_backfill(base, "cancelled from the UI")
    journey.goto(f"/runs/b/{backfill}")
    expect(page.get_by_text(re.compile(r"^\d+% completed$")).first).to_be_visible()
    run_id = _wait_for(
        "a run of the backfill with a long step in progress",
        lambda: _long_step_running(base, backfill),
        RUN_MS / 1000,
        log,
    )
    # The page open already: the click follows the step's start by a moment.
    # The backfill's actions: the menu button at the right of its page's header.
    journey.button("expand_more", exact=True).first.click()
    page.get_by_role("menuitem", name="Cancel backfill").click()
    dialog = page.get_by_role("dialog").filter(
        has_text="In progress runs associated with this backfill will be canceled"
    )
    expect(dialog).to_be_visible()
    journey.shot("cancel-dialog")
    dialog.get_by_role("button", name="Cancel backfill").click()
    cancel_clicked = time.monotonic()
    expect(dialog).to_be_hidden()
    status = page.get_by_text("Status", exact=True).locator("..")
    expect(status).to_contain_text("Canceled", timeout=RUN_MS)
    journey.shot("backfill-canceled")
    assert _backfill_status(base, backfill) == "CANCELED"
    return backfill, run_id, cancel_clicked


@pytest.mark.timeout(1800)  # up to CANCEL_ATTEMPTS backfills cancelled, then one more
def test_e_a_backfill_cancelled_from_the_ui_leaves_no_half_written_artefact_or_shard(
    served: Served, journey: Journey, tmp_path: Path
) -> None:
    """What Dagster's cancel does here (``dagster dev``: the default run launcher, every step in
    the run's process): the backfill turns CANCELING; the daemon's next backfill iteration
    terminates its unfinished runs (queued ones are marked canceled; a started one is sent a
    gRPC cancel, and the code server sets the run's termination event); the run worker then
    sends itself SIGINT, which inside a step raises ``DagsterExecutionInterruptedError`` at the
    step's next Python instruction (a blocking call returns EINTR first), so the step fails
    where it was, its ``finally`` blocks and context managers run, and the run ends CANCELED.
    The season's shard is never started: the backfill requests it only after its videos'
    fingerprints and embeddings (a dependency on all their partitions), and the cancel comes
    while a video step runs. A shard build that would be hit anyway writes in its own temp
    folder, stores the file with one atomic put, then records it: the checks below cover it.
    """
    base, log = served.server.base, served.server.log
    page = journey.page
    # The instance quiet (no run of an earlier journey, or of the publish sensor, in flight):
    # what is stored now is what an uninterrupted build made.
    _wait_for("no run in flight", lambda: not _runs(base, statuses=IN_FLIGHT), RUN_MS / 1000, log)
    before, recorded = _stored(served.home), _recorded(served.home)
    assert {raw_audio_key(k) for k in CANCELLED_VIDEOS} <= {
        p.removeprefix("artefacts/") for p in before
    }, sorted(before)
    assert _inconsistencies(served, tmp_path) == []

    # The daemon acts on a cancel at its next backfill iteration, 30 s or more after the click
    # (66 s here once, quiet): a quick machine can end every run before that, and then there was
    # nothing to cancel. Such a backfill ran to its end (storing what was stored: checked below
    # with the rest), and the journey is made again, up to CANCEL_ATTEMPTS times.
    tries = 0
    while tries < CANCEL_ATTEMPTS:
        tries += 1
        backfill, run_id, cancel_clicked = _cancel_from_the_ui(journey, base, log)
        runs = _backfill_runs(base, backfill)
        assert {r["status"] for r in runs} <= TERMINAL, runs
        cancelled = [r for r in runs if r["status"] == "CANCELED"]
        if cancelled:
            break
        assert {r["status"] for r in runs} == {"SUCCESS"}, runs
        _wait_for(
            "no run in flight", lambda: not _runs(base, statuses=IN_FLIGHT), RUN_MS / 1000, log
        )
    assert cancelled, (
        f"no run of the backfill was cancelled in {tries} tries (first seen: {run_id}): {runs}"
    )
    interrupted, retried = {}, []
    for run in runs:
        steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
        assert "IN_PROGRESS" not in steps.values(), steps
        events = graphql(base, _STEP_FAILURES, {"runId": run["runId"]})["logsForRun"]["events"]
        for e in events:
            if e["__typename"] == "ExecutionStepFailureEvent":
                interrupted[(run["runId"], e["stepKey"])] = e["error"]
            elif e["__typename"] == "ExecutionStepUpForRetryEvent":
                retried.append((run["runId"], e["stepKey"]))
    # A step running when the cancel came is interrupted; Dagster retries an interrupted step
    # that has a retry policy, and the retry stops at once (stop_if_cancelled): no run goes
    # on after an interrupt, and no step failed for another reason.
    assert all(
        r["status"] == "CANCELED" for r in runs if any(k[0] == r["runId"] for k in retried)
    ), (retried, runs)
    assert all(
        e["className"] == "DagsterExecutionInterruptedError"
        or "the run was cancelled" in e["message"]
        for e in interrupted.values()
    ), interrupted
    (ARTIFACTS / "e-cancelled-runs.json").write_text(
        json.dumps(
            {
                "first_seen_mid_transcript": run_id,
                "runs": {r["runId"]: r["status"] for r in runs},
                "failed_steps": {f"{k[0]}: {k[1]}": e["className"] for k, e in interrupted.items()},
                "retried_steps": [f"{r}: {k}" for r, k in retried],
                "cancel_to_canceled_s": round(time.monotonic() - cancel_clicked, 1),
                "tries": tries,
            },
            indent=2,
        )
    )
    # The season's shard was never requested: no run of the backfill selected it.
    assert all(
        r["tags"] and {"key": "dagster/partition", "value": CANCELLED_SEASON} not in r["tags"]
        for r in runs
    ), runs

    _wait_for("no run in flight", lambda: not _runs(base, statuses=IN_FLIGHT), RUN_MS / 1000, log)
    assert _inconsistencies(served, tmp_path) == []

    # The same backfill again completes, and what it stores is what was stored before the
    # cancelled one began, byte for byte; the catalog records the same versions.
    again = _launch_backfill(base, "the cancelled backfill, again")
    _wait_for(
        "the backfill again to complete",
        lambda: (
            _backfill_status(base, again) in ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED")
        ),
        2 * RUN_MS / 1000,
        log,
    )
    assert _backfill_status(base, again) == "COMPLETED_SUCCESS", _backfill_runs(base, again)
    journey.goto(f"/runs/b/{again}")
    expect(page.get_by_text("100% completed").first).to_be_visible()
    journey.shot("backfill-again")
    _wait_for("no run in flight", lambda: not _runs(base, statuses=IN_FLIGHT), RUN_MS / 1000, log)
    assert _inconsistencies(served, tmp_path) == []
    after = _stored(served.home)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"differs from the uninterrupted build: {changed}"
    assert _recorded(served.home) == recorded


def test_the_dev_server_stops_on_sigint_even_when_started_in_the_background(
    served: Served,
) -> None:
    """Last: it stops the module's server."""
    proc = served.server.proc
    ignored = int(
        re.search(r"SigIgn:\s+([0-9a-f]+)", Path(f"/proc/{proc.pid}/status").read_text()).group(1),  # type: ignore[union-attr]
        16,
    )
    assert not ignored & (1 << (signal.SIGINT - 1)), (
        "SIGINT is still ignored after the wrapper's exec"
    )
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dagster dev ignored SIGINT:\n{served.server.log.read_text()[-2000:]}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    pytest.fail("dagster dev's webserver, daemon or code server outlived it")
