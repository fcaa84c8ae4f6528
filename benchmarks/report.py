"""What the benchmarks that run on their own share: the machine line, and their section of
RESULTS.md (between markers, replaced on each run)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

RESULTS_MD = Path(__file__).parent / "RESULTS.md"


def machine() -> str:
    """``2 cores (CPU model), Python 3.11.7``."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def replace_section(start: str, end: str, lines: list[str]) -> None:
    """Put ``lines`` (which begin with ``start`` and end with ``end``) in RESULTS.md in place
    of the section between those markers, or at the end when there is none."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    if start in text and end in text:
        text = text[: text.index(start)] + text[text.index(end) + len(end) :]
    RESULTS_MD.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
