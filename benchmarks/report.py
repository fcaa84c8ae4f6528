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


def replace_section(
    start: str, end: str, lines: list[str], *, legacy_heading: str | None = None
) -> None:
    """Put ``lines`` (which begin with ``start`` and end with ``end``) in RESULTS.md in place
    of the section between those markers, or at the end when there is none.

    ``legacy_heading``: a section written before it had markers, replaced in place: from the
    line that begins with it to the next heading of its level or marker."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    if start in text and end in text:
        i = text.index(start)
        text = text[:i] + "\n".join(lines) + text[text.index(end) + len(end) :]
        RESULTS_MD.write_text(text)
        return
    if legacy_heading:
        at = text.find("\n" + legacy_heading)
        if at >= 0:
            rest = text[at + 1 :]
            ends = [rest.find(m, 1) for m in ("\n## ", "\n<!--")]
            stop = min((e for e in ends if e > 0), default=len(rest))
            text = text[: at + 1] + "\n".join(lines) + "\n" + rest[stop:]
            RESULTS_MD.write_text(text)
            return
    RESULTS_MD.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
