"""The daemon path: `make dev`'s sensors discover files and its run queue materialises them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from citywok_pipeline.catalog import open_catalog, plan_seasons
from citywok_pipeline.snapshot import open_shard, verify_snapshot

from .conftest import start_dev_server

pytestmark = pytest.mark.slow

SEASON_A, SEASON_B = "harbour-lights-s01", "the-night-kitchen-s01"
# Every video's run transcribes and embeds it too: minutes on two cores, many more when other
# work loads both cores. The runs execute in-process (one process, each model loaded once per
# run, instead of a process and a model load per step); the waits end as soon as the
# condition holds.
WAIT_S = 900


def episodes_in(shard: Path) -> list[str]:
    if not shard.is_file():
        return []
    opened = open_shard(shard)
    try:
        return [e.episode_id for e in opened.episodes]
    finally:
        opened.close()


def settled(catalog: Path) -> bool:
    """Every present video went all the way (fingerprints and embeddings) and every season's
    shard holds what its videos give it: nothing left for the season sensor to request."""
    if not catalog.is_file():
        return False
    cat = open_catalog(catalog)
    videos = cat.videos(include_removed=True)
    present = [v for v in videos if not v.removed]
    return (
        bool(present)
        and all(v.fingerprints_version and v.embeddings_version for v in present)
        and not plan_seasons(videos, cat.season_builds())
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, (
            f"{what} after {timeout_s} s:\n{log.read_text()[-3000:]}"
        )
        time.sleep(2)


@pytest.mark.timeout(2 * WAIT_S + 300)
def test_new_files_are_discovered_and_materialised_without_a_reload(
    media_root: Path, spare_episode: tuple[Path, str], tmp_path: Path
) -> None:
    home = tmp_path / "citywok"
    log = tmp_path / "dagster-dev.log"
    snapshot = home / "snapshot"
    catalog = home / "catalog.sqlite"
    with start_dev_server(
        home, media_root, log, extra_env={"CITYWOK_EXECUTOR": "in_process"}
    ) as server:
        # Nothing was materialised: the sensors and the queued runs build every shard (first
        # from fingerprints, again when the transcripts' embeddings land).
        wait_until(
            lambda: len(episodes_in(snapshot / f"{SEASON_A}.lmdb")) == 2
            and len(episodes_in(snapshot / f"{SEASON_B}.lmdb")) == 2
            and settled(catalog),
            WAIT_S, "the daemon did not build both shards", log,
        )  # fmt: skip
        assert verify_snapshot(snapshot) == []

        spare, relative = spare_episode
        season = SEASON_A if relative.startswith("Harbour") else SEASON_B
        other = snapshot / f"{SEASON_B if season == SEASON_A else SEASON_A}.lmdb"
        stored_other = home / "artefacts" / "shards" / other.name
        other_before = (other.read_bytes(), stored_other.stat().st_mtime_ns)
        shutil.copyfile(spare, media_root / relative)
        wait_until(
            lambda: len(episodes_in(snapshot / f"{season}.lmdb")) == 3 and settled(catalog),
            WAIT_S, "the new episode did not reach its season's shard", log,
        )  # fmt: skip
        # The other season's shard was neither rebuilt nor rewritten.
        assert (other.read_bytes(), stored_other.stat().st_mtime_ns) == other_before

        # SIGTERM stops `dagster dev` and everything it started.
        os.kill(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dagster dev ignored SIGTERM:\n{log.read_text()[-2000:]}")
