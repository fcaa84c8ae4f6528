"""The real `citywok` console script, run as a subprocess the way a user or a CI check runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The console script installed beside the interpreter running the tests (.venv/bin/citywok).
CITYWOK_DIR = Path(sys.executable).parent
CLI_TIMEOUT_S = 120


@dataclass(frozen=True)
class CliResult:
    """What one `citywok` run did: its exit code and its decoded output."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout parsed as JSON lines (the `match --json` shape)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("citywok: error:")]

    def __str__(self) -> str:
        return (
            f"citywok {' '.join(self.args)} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


Citywok = Callable[..., CliResult]


@pytest.fixture(scope="session")
def citywok_script() -> Path:
    found = shutil.which("citywok", path=str(CITYWOK_DIR))
    assert found is not None, f"no citywok console script in {CITYWOK_DIR}: run `make setup`"
    return Path(found)


@pytest.fixture(scope="session")
def citywok(citywok_script: Path) -> Citywok:
    """Run ``citywok ARGS...`` and return a :class:`CliResult`.

    ``env`` replaces the whole environment when given; the script is started by the test
    interpreter, so it runs even when PATH holds nothing (the no-ffmpeg case).
    """

    def run(
        *args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> CliResult:
        argv = tuple(os.fspath(a) for a in args)
        proc = subprocess.run(
            [sys.executable, str(citywok_script), *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        return CliResult(argv, proc.returncode, proc.stdout, proc.stderr)

    return run
