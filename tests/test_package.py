"""The package as users and other code see it: documented commands, and a Dagster-free core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citywok_pipeline.cli import main
from tests.conftest import CITYWOK

REPO = Path(__file__).resolve().parents[1]
COMMANDS = sorted(main.commands)


def citywok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CITYWOK), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_has_the_contracted_commands() -> None:
    assert {"index", "match", "info", "verify"} <= set(COMMANDS)


def test_the_top_level_help_lists_every_command() -> None:
    result = citywok("--help")
    assert result.returncode == 0, result.stderr
    listed = {
        line.split()[0]
        for line in result.stdout.split("Commands:", 1)[1].splitlines()
        if line.strip()
    }
    assert listed == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = citywok(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: citywok {command} ")
    description = result.stdout.split("\n\n", 2)[1].strip()
    assert len(description) > 20, result.stdout
    assert "Options:" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented_in_the_readme(command: str) -> None:
    readme = (REPO / "README.md").read_text()
    assert f"citywok {command} " in readme
