"""The long fault-injection run (``make faults``): tests/faults with ``CITYWOK_FAULTS=long``.

``python -m benchmarks.faults [--scale F] [PYTEST ARGS...]``

``--scale F`` runs a shorter long run: every long count times F (``--scale 0.5``: 10 kills
per operation, 13 racing rounds, 1,500 fuzz examples), never fewer than CI's.

Runs the suite with 20+ kill trials per operation, 4 x 25 racing publish rounds and thousands
of fuzz examples, then writes what every test tried and what survived to
benchmarks/faults.json and the "Fault injection" section of benchmarks/RESULTS.md. Exits with
pytest's code: a fault that lost or corrupted anything fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from .report import machine, replace_section

HERE = Path(__file__).parent
RESULTS_JSON = HERE / "faults.json"
SECTION_START, SECTION_END = "<!-- faults -->", "<!-- /faults -->"


def summary_lines(report: dict, *, elapsed_s: float, load: str, passed: bool) -> list[str]:
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for row in report["rows"]:
        by_suite[row["suite"]].append(row)
    lines = [
        SECTION_START,
        "## Fault injection",
        "",
        f"`make faults` ({report['mode']} mode"
        + (f", scaled to {report['scale']:g} of its trials" if report.get("scale", 1) != 1 else "")
        + f"): {'passed' if passed else 'FAILED'} in "
        f"{elapsed_s / 60:.1f} min on {machine()}, load {load}.",
        "",
        "| suite | case | figures |",
        "| --- | --- | --- |",
    ]
    for suite in sorted(by_suite):
        for row in by_suite[suite]:
            figures = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.items()
                                if k not in ("suite", "case"))  # fmt: skip
            lines.append(f"| {suite} | {row['case']} | {figures} |")
    lines += ["", SECTION_END]
    return lines


def main(argv: list[str]) -> int:
    scale = 1.0
    if argv and argv[0].startswith("--scale"):
        value = argv[0].partition("=")[2] or argv[1]
        argv = argv[1:] if "=" in argv[0] else argv[2:]
        scale = float(value)
    env = dict(os.environ, CITYWOK_FAULTS="long", CITYWOK_FAULTS_REPORT=str(RESULTS_JSON),
               CITYWOK_FAULTS_SCALE=str(scale))  # fmt: skip
    RESULTS_JSON.unlink(missing_ok=True)  # figures of an earlier run are not this run's
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    started = time.monotonic()
    code = subprocess.call(
        [sys.executable, "-m", "pytest", "tests/faults", "-p", "no:cacheprovider", *argv],
        env=env, cwd=HERE.parent,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if not RESULTS_JSON.exists():
        print("benchmarks.faults: the suite wrote no figures", file=sys.stderr)
        return code or 1
    report = json.loads(RESULTS_JSON.read_text())
    report.update(elapsed_s=round(elapsed, 1), load_at_start=load, passed=code == 0)
    RESULTS_JSON.write_text(json.dumps(report, indent=2) + "\n")
    replace_section(
        SECTION_START, SECTION_END, summary_lines(report, elapsed_s=elapsed, load=load,
                                                  passed=code == 0),
    )  # fmt: skip
    print(
        f"benchmarks.faults: figures in {RESULTS_JSON} and benchmarks/RESULTS.md", file=sys.stderr
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
