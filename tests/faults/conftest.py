"""Shared tools of the fault-injection suite (see tests/faults/README.md for the layout).

- ``LONG`` / :func:`trials`: how hard to try. CI runs the short version; ``make faults``
  (``CITYWOK_FAULTS=long``) the long one.
- :data:`FUZZ`: the Hypothesis settings every fuzz test uses: a fixed profile (derandomized,
  no example database), so that a CI run is the same run every time.
- :func:`tree_digest`: the sha256 of every file under some folders, to show that stored
  artefacts are unchanged by a fault (take it before, compare after).
- :class:`FaultFigures` (fixture ``fault_figures``): what each test tried and what survived;
  written to ``$CITYWOK_FAULTS_REPORT`` when set, the figures the README quotes.
- :func:`run_killed`, :func:`session_pids`: start a command in its own session, SIGKILL it
  at a chosen moment, and find what it left running.
- :func:`hostile_inputs`: the catalogue of bad media files (empty, truncated, not audio, a
  video without sound, a decompression bomb...), each with the error it must get.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.conftest import CITYWOK

LONG = os.environ.get("CITYWOK_FAULTS", "") == "long"
# A shorter long run (`python -m benchmarks.faults --scale 0.5`): each long count scaled.
SCALE = float(os.environ.get("CITYWOK_FAULTS_SCALE") or 1.0)


def trials(*, ci: int, long: int) -> int:
    """How many trials a test runs: ``ci`` in the default run, ``long`` under ``make faults``
    (times ``CITYWOK_FAULTS_SCALE``, never fewer than ``ci``)."""
    return max(ci, round(long * SCALE)) if LONG else ci


# Deterministic in CI (derandomize: the same examples every run, no database of failures to
# replay); many more examples under `make faults`. A hang is caught by the test's timeout.
FUZZ = settings(
    max_examples=trials(ci=150, long=3000),
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def tree_digest(*roots: Path) -> dict[str, str]:
    """``{path: sha256}`` of every file under ``roots`` (symlinks as their target text)."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists() and not root.is_symlink():
            continue
        paths = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class FaultFigures:
    """What the suite tried, per test: rows of ``{"suite", "case", <count>: n, ...}``."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, suite: str, case: str, **counts: int | float) -> None:
        self.rows.append({"suite": suite, "case": case, **counts})

    def tally(self, suite: str, case: str, **increments: int) -> None:
        """Add to the counts of the row ``(suite, case)`` (made on first use)."""
        row = next((r for r in self.rows if (r["suite"], r["case"]) == (suite, case)), None)
        if row is None:
            row = {"suite": suite, "case": case}
            self.rows.append(row)
        for k, n in increments.items():
            row[k] = row.get(k, 0) + n


@pytest.fixture(scope="session")
def fault_figures() -> Iterator[FaultFigures]:
    figures = FaultFigures()
    yield figures
    report = os.environ.get("CITYWOK_FAULTS_REPORT")
    if report:
        found = {"mode": "long" if LONG else "ci", "scale": SCALE, "rows": figures.rows}
        Path(report).write_text(json.dumps(found, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Processes: kill -9 at a chosen moment, and what is left running afterwards.


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(d.name))
    return found


def wait_until(condition: Callable[[], bool], *, timeout_s: float, every_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)


@dataclass(frozen=True)
class Killed:
    """One run of a command that was SIGKILLed at ``after_s`` (unless it finished first)."""

    args: tuple[str, ...]
    after_s: float
    killed: bool  # False: it finished before the kill was due
    returncode: int
    stdout: str
    stderr: str
    orphans: tuple[int, ...]  # processes of its session still alive after the kill

    def __str__(self) -> str:
        return (
            f"{' '.join(self.args)} {'killed' if self.killed else 'finished'} at "
            f"{self.after_s:.2f} s (exit {self.returncode}, orphans {list(self.orphans)})\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def run_killed(
    args: Iterable[str | os.PathLike[str]],
    *,
    after_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    orphan_grace_s: float = 10.0,
    when: Callable[[int], bool] | None = None,
    timeout_s: float = 300.0,
) -> Killed:
    """Run ``args`` in a new session and SIGKILL its first process after ``after_s`` seconds
    (or, with ``when``, ``after_s`` after ``when(pid)`` first holds: a moment told by what
    the command has written, such as "a shard's temp file exists").

    Only the first process is killed, as the OOM killer or ``kill -9 PID`` would; what it
    started (pool workers, ffmpeg) must go by itself. Whatever of its session is still alive
    ``orphan_grace_s`` later is reported in ``orphans`` and then killed, so that no test
    leaves processes behind.
    """
    argv = tuple(os.fspath(a) for a in args)
    with (
        open(os.devnull, "rb") as stdin,
        _temp_output() as (out, out_path),
        _temp_output() as (err, err_path),
    ):
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
        )
        if when is not None:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None and not when(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.001)
        try:
            proc.wait(timeout=after_s)
            killed = False
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        wait_until(lambda: not session_pids(proc.pid), timeout_s=orphan_grace_s)
        orphans = tuple(session_pids(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out.flush()
        err.flush()
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    return Killed(argv, after_s, killed, proc.returncode, stdout, stderr, orphans)


@contextlib.contextmanager
def _temp_output() -> Iterator[tuple[Any, Path]]:
    import tempfile

    fd, name = tempfile.mkstemp(prefix="citywok-faults-", suffix=".log")
    path = Path(name)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f, path
    finally:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Hostile media files


@dataclass(frozen=True)
class Hostile:
    """A bad media file and the error it must get (a regex over the error line)."""

    kind: str
    path: Path
    reason: str


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def hostile_inputs(folder: Path, *, good: Path) -> list[Hostile]:
    """Write the catalogue of bad media files into ``folder``; ``good`` is a real episode
    (flac or m4a) to cut. Each file is one kind of bad input and names the error it must get.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Hostile] = []

    def add(kind: str, name: str, reason: str) -> Path:
        path = folder / name
        out.append(Hostile(kind, path, reason))
        return path

    add("empty", "empty.mp3", r"file is empty \(0 bytes\)").touch()
    add("not audio", "notes.txt", r"not an audio file").write_text("the last ten minutes\n")
    add("wrong extension", "error-page.mp3", r"not an audio file").write_text(
        "<html><body><h1>404 Not Found</h1></body></html>\n"
    )
    data = good.read_bytes()
    add("truncated", f"cut{good.suffix}", r"truncated or corrupt").write_bytes(data[:2000])
    add(
        "not audio (random bytes)", "noise.flac", r"not an audio file|truncated or corrupt"
    ).write_bytes(hashlib.sha256(b"citywok").digest() * 64)
    _ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=64x64:d=1", "-c:v", "mpeg4",
            str(add("video without audio", "silent.mkv", r"has no audio stream")))  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# A small media library and its snapshot, built once per session (copy before changing them)

EPISODE_S = 20.0
SAMPLE_RATE = 8000


def build_media(root: Path, *, seasons: int = 2, episodes: int = 2, seed: int = 0) -> list[Path]:
    """``root/Show/Season NN/Show - SNNEMM.<flac|mp3>``: seeded tone music, encoded by ffmpeg."""
    from citywok_pipeline.demo.library import encode
    from tests.conftest import tone_music

    paths = []
    for s in range(1, seasons + 1):
        for e in range(1, episodes + 1):
            fmt = "flac" if e % 2 else "mp3"
            path = root / "Show" / f"Season {s:02d}" / f"Show - S{s:02d}E{e:02d}.{fmt}"
            samples = tone_music(EPISODE_S, seed * 1000 + s * 100 + e, sample_rate=SAMPLE_RATE)
            paths.append(encode(samples, path, sample_rate=SAMPLE_RATE))
    return paths


def citywok(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            timeout_s: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the real console script of this venv."""
    return subprocess.run(
        [str(CITYWOK), *map(os.fspath, args)], capture_output=True, text=True, errors="replace", env=env,
        timeout=timeout_s, check=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Library:
    media: Path
    snapshot: Path
    files: tuple[Path, ...]


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    """Two seasons of two 20 s episodes, indexed (fingerprints only). Read-only: copy it."""
    work = tmp_path_factory.mktemp("faults-library")
    files = build_media(work / "media")
    result = citywok("index", work / "media", "--snapshot", work / "snapshot",
                     "--fingerprints-only", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Library(work / "media", work / "snapshot", tuple(files))
