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
  run, the season's rebuilt shard and a new published version, each found in the UI.
"""

from __future__ import annotations

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

from citywok_pipeline.catalog import ScanPlan, open_catalog
from citywok_pipeline.embedded import prepare_dagster_home, run_pipeline_once
from citywok_pipeline.resources import ArtefactStore

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
    }
    with start_dev_server(home, media, root / "dagster-dev.log", extra_env=env) as server:
        # The catch-up sensor's first evaluation only records when it ran (a cron tick counts
        # from the one before); then it is stopped, for journey (c) to switch it on.
        deadline = time.monotonic() + 120
        while not (state := _sensor(server.base, "video_catch_up_sensor"))["ticks"]:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(1)
        stopped = graphql(
            server.base,
            "mutation ($id: String!) { stopSensor(id: $id) { __typename } }",
            {"id": state["id"]},
        )["stopSensor"]
        assert stopped["__typename"] == "StopSensorMutationResult", stopped
        yield Served(server, media, home, spare, relative)


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
