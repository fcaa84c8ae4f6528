"""What a one-shot command costs: `citywok search` and `citywok match` run as fresh processes.

A person at a terminal (or a script) runs ``citywok search DIR "text"`` or ``citywok match
DIR clip.wav`` once and waits for the process: its start (the interpreter, the imports), the
snapshot's open, the query model's load, the work and the exit. This runs each command
``--runs`` times as a new process, the way a person would (the console script of this
environment), after one run to warm the page cache, and reports the median and the spread of
the wall-clock time and the CPU the child used; beside them, an interpreter that does nothing
(``python -c pass``), ``import numpy`` alone and ``citywok --help``, which bound what any
command can reach.

The snapshot (``benchmarks/.data/cli_start``, rebuilt each run) is a small library with
both sides: 3 seasons of 4 one-minute episodes (synthesised music, fingerprinted), 300
transcript segments per season embedded with the packaged model, and a 10 s clip of one
episode as a 44.1 kHz stereo WAV (so ffmpeg resamples it, as for a real recording).
The time of a one-shot command hardly depends on the library's size: the shards are
memory-mapped and only what a query touches is read.

    flock /tmp/citywok-bench.lock .venv/bin/python -m benchmarks.cli_start [--runs 9]

The targets (issue 16): a CLI search <= 1.0 s, a CLI match of one clip <= 0.5 s, wall, on 2
cores. The load average is recorded at the start and the end: on a shared machine the wall
times are upper bounds, and the CPU times say what the command itself costs.
Writes benchmarks/cli_start.json and its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from .report import machine, replace_section

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "cli_start"
RESULTS_JSON = HERE / "cli_start.json"
START, END = "<!-- cli_start -->", "<!-- /cli_start -->"
TARGETS_S = {"search": 1.0, "match": 0.5}
QUERY = "where did you put the ladder"


def load_now() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def build_library(root: Path) -> tuple[Path, Path]:
    """The snapshot and the clip described in the module docstring."""
    from citywok_pipeline.demo.library import _LIBRARY_WORDS, _sentence
    from citywok_pipeline.fingerprint import DEFAULT_PARAMS, fingerprint
    from citywok_pipeline.fingerprint.records import Episode
    from citywok_pipeline.snapshot import write_shard
    from citywok_pipeline.snapshot.quantization import quantize
    from citywok_pipeline.snapshot.segments import SegmentTable
    from citywok_pipeline.transcripts.embedder import load_query_embedder
    from tests.conftest import tone_music

    if root.exists():
        shutil.rmtree(root)
    snap = root / "snapshot"
    snap.mkdir(parents=True)
    embedder = load_query_embedder()
    rng = np.random.default_rng(0)
    rate = DEFAULT_PARAMS.sample_rate
    clip_source = None
    for s in range(3):
        season = f"show-s{s + 1:02d}"
        episodes, hashes = [], []
        for e in range(4):
            music = tone_music(60.0, seed=100 * s + e)
            episodes.append(
                Episode(episode_id=f"{season}e{e + 1:02d}", season=season, duration_s=60.0)
            )
            hashes.append(fingerprint(music, params=DEFAULT_PARAMS))
            if clip_source is None:
                clip_source = music
        texts = [_sentence(rng, _LIBRARY_WORDS) for _ in range(300)]
        texts[7] = "Where did you put the ladder?"
        starts = np.arange(300, dtype=np.float32) % 75 * 0.8
        table = SegmentTable(
            (np.arange(300) // 75).astype(np.uint32), starts, starts + 0.7, texts,
            quantize(embedder.embed(texts)), embedder.model_name,
        )  # fmt: skip
        write_shard(
            snap / f"{season}.lmdb", season=season, episodes=episodes, hashes=hashes,
            params=DEFAULT_PARAMS, segments=table,
        )  # fmt: skip
    assert clip_source is not None
    # 10 s from 20 s in, at 44.1 kHz stereo: what a recording or a download looks like.
    part = clip_source[20 * rate : 30 * rate]
    t = np.arange(int(len(part) * 44100 / rate)) * rate / 44100
    resampled = np.interp(t, np.arange(len(part)), part)
    pcm = (np.clip(resampled, -1, 1) * 32767).astype("<i2")
    clip = root / "clip.wav"
    with wave.open(str(clip), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(44100)
        f.writeframes(np.repeat(pcm, 2).tobytes())
    return snap, clip


def time_runs(cmd: list[str], runs: int, *, expect: str = "") -> dict[str, Any]:
    """Run ``cmd`` once to warm up, then ``runs`` times: wall and child CPU per run."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if first.returncode != 0 or expect not in first.stdout:
        raise SystemExit(
            f"{' '.join(cmd)} failed ({first.returncode}):\n{first.stdout}{first.stderr}"
        )
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "wall_median_s": round(statistics.median(walls), 3),
        "wall_min_s": round(min(walls), 3),
        "wall_max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpus), 3),
        "runs": runs,
        "load": load_now(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each command")
    args = parser.parse_args(argv)
    citywok = str(Path(sys.executable).with_name("citywok"))
    result: dict[str, Any] = {"load_at_start": load_now(), "cpus": os.cpu_count()}
    snap, clip = build_library(DATA)
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], ""),
        "python -c 'import numpy'": ([sys.executable, "-c", "import numpy"], ""),
        "citywok --help": ([citywok, "--help"], "Usage"),
        "search": ([citywok, "search", str(snap), QUERY, "--json"], "ladder"),
        "search --mode keyword": (
            [citywok, "search", str(snap), QUERY, "--json", "--mode", "keyword"],
            "ladder",
        ),
        "match": ([citywok, "match", str(snap), str(clip), "--json"], "show-s01e01"),
    }
    result["commands"] = {}
    for label, (cmd, expect) in commands.items():
        result["commands"][label] = time_runs(cmd, args.runs, expect=expect)
        print(f"[cli_start] {label}: {result['commands'][label]}", file=sys.stderr, flush=True)
    result["load_at_end"] = load_now()
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["machine"] = machine()
    RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
    replace_section(START, END, results_section())
    print(json.dumps(result, indent=2))
    return 0


def results_section() -> list[str]:
    """This benchmark's section of RESULTS.md, from its last run (none before one)."""
    if not RESULTS_JSON.exists():
        return []
    r = json.loads(RESULTS_JSON.read_text())
    quiet = all(float(r[k].split()[0]) < 1.5 for k in ("load_at_start", "load_at_end"))
    lines = [
        START,
        "## One-shot commands (process start to exit)",
        "",
        f"Run {r['date']} on {r['machine']} by `flock /tmp/citywok-bench.lock python -m "
        "benchmarks.cli_start` (raw numbers: `benchmarks/cli_start.json`): each command run "
        "as a fresh process (the console script) after one warm-up run, median of "
        f"{next(iter(r['commands'].values()))['runs']} runs; load average {r['load_at_start']} "
        f"at the start, {r['load_at_end']} at the end "
        + ("(quiet)." if quiet else "(other work shared the 2 cores: the wall times are upper "
           "bounds; the CPU column is the command's own).")
        + " A 3-season snapshot with fingerprints and 900 transcript segments; the clip is 10 s "
        "of an episode as a 44.1 kHz stereo WAV.",
        "",
        "| command | wall median s | min-max s | CPU median s | target |",
        "| --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for label, m in r["commands"].items():
        target = TARGETS_S.get(label)
        mark = "" if target is None else (
            f"<= {target} s: {'met' if m['wall_median_s'] <= target else 'not met'}")  # fmt: skip
        name = f"`citywok {label}`" if label.startswith(("search", "match")) else f"`{label}`"
        lines.append(
            f"| {name} | {m['wall_median_s']} | {m['wall_min_s']}-{m['wall_max_s']} "
            f"| {m['cpu_median_s']} | {mark} |"
        )
    lines += [
        "",
        "What a search pays for: the interpreter and numpy, click, the snapshot's open (LMDB, "
        "the shards' metadata and checksums of the small sections), usearch, and the query "
        "model: MiniLM run in numpy (`transcripts/query_model.py`), its weights viewed in the "
        "file's memory map, one sentence through six layers; no torch, transformers or "
        "sentence-transformers (tests/cli/test_imports.py). `--mode keyword` loads no model. "
        "A match: the interpreter, numpy and the fingerprint core (no scipy), one ffmpeg "
        "process to decode and resample the clip, and the matching itself.",
        END,
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
