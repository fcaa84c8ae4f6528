"""The import contracts of pyproject.toml's [tool.importlinter], checked by import-linter (the
same `lint-imports` as `make lint`): the Dagster-free core imports neither Dagster nor the
Dagster side of the package, directly or through any other module, even inside a function; and
the snapshot format does not import the transcript side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout


def test_a_broken_contract_is_caught(tmp_path: Path) -> None:
    # The same contracts over a copy of the package in which the core imports Dagster.
    import shutil

    shutil.copytree(REPO / "citywok_pipeline", tmp_path / "citywok_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    bad = tmp_path / "citywok_pipeline" / "fingerprint" / "params.py"
    bad.write_text(bad.read_text() + "\n\ndef _later() -> None:\n    from ..assets import audio\n")
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, check=False, env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "citywok_pipeline.fingerprint.params -> citywok_pipeline.assets.audio" in result.stdout
