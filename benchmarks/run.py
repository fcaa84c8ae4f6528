"""`make bench`: speed, size, memory and accuracy, written to benchmarks/RESULTS.md.

    python -m benchmarks.run [--hours 1000] [--previous REF] [--seeds 4] [--clips-per-seed 10]
        [--skip-sim]

Work files live in benchmarks/.data/ (gitignored); the simulated snapshot is reused when it
is already there. Accuracy and the large snapshot compare the previous matcher with this one
(benchmarks/accuracy.py, which also runs them alone). Sections of RESULTS.md this does not
write (between markers, from benchmarks run on their own) are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.indexer import index_library, process_file
from citywok_pipeline.library import scan_media
from citywok_pipeline.snapshot import Snapshot, shard_paths

from . import accuracy, cli_start, search_snapshot, serve
from .accuracy import build_corpus
from .layouts import compare_layouts
from .report import RESULTS_MD, replace_section

HERE = Path(__file__).parent
DATA = HERE / ".data"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # MiB
    return out


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def bench_indexing(corpus) -> dict:
    """(a) x realtime per core, decode included, against decode alone (the baseline)."""
    files = scan_media(corpus.root).files
    audio_s = 0.0
    t0 = time.process_time()
    w0 = time.perf_counter()
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for f in files:
        audio_s += decode(f.path, sample_rate=8000).size / 8000
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    decode_cpu = (time.process_time() - t0) + (
        c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    )
    decode_wall = time.perf_counter() - w0
    t0 = time.process_time()
    w0 = time.perf_counter()
    for f in files:
        process_file(f.path, corpus_params())
    c2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    full_cpu = (time.process_time() - t0) + (c2.ru_utime + c2.ru_stime - c1.ru_utime - c1.ru_stime)
    full_wall = time.perf_counter() - w0
    out = DATA / "index-jobs2"
    shutil.rmtree(out, ignore_errors=True)
    w0 = time.perf_counter()
    index_library(corpus.root, out, jobs=2)
    jobs2_wall = time.perf_counter() - w0
    return {
        "audio_s": audio_s,
        "files": len(files),
        "decode_only_x_per_core": audio_s / decode_cpu,
        "index_x_per_core": audio_s / full_cpu,
        "index_x_wall_1_process": audio_s / full_wall,
        "index_x_wall_2_processes": audio_s / jobs2_wall,
        "decode_wall_share": decode_wall / full_wall,
    }


def corpus_params():
    from citywok_pipeline.fingerprint import DEFAULT_PARAMS

    return DEFAULT_PARAMS


def bench_layouts(hours: float) -> list[dict]:
    from citywok_pipeline.snapshot import open_shard

    sim = DATA / f"sim-{int(hours)}h"
    path = next(p for p in shard_paths(sim) if p.name.startswith("sim-"))
    shard = open_shard(path)
    rng = np.random.default_rng(3)
    # Query keys like a 10 s clip's: ~3000 drawn from the index's own key distribution.
    keys = shard.postings.posting_keys()
    queries = [keys[rng.integers(0, keys.size, 3000)] for _ in range(20)]
    rows = compare_layouts(shard.postings, queries)
    hours_shard = float(shard.meta["duration_s"]) / 3600
    shard.close()
    for r in rows:
        r["shard_hours"] = hours_shard
    return rows


OWN_MARKERS = (accuracy.SECTION_ACCURACY[0], accuracy.SECTION_LARGE[0])


def write_results(res: dict) -> None:
    ix, lay = res["indexing"], res.get("layouts", [])
    lines = [
        "# Benchmark results",
        "",
        f"Run {res['date']} on {res['machine']}, by `make bench` (`python -m benchmarks.run`).",
        f"Commit {res['commit']}. Raw numbers: `benchmarks/results.json`.",
        "",
        *accuracy.accuracy_section(res.get("accuracy")),
        "",
        "## Indexing speed (a)",
        "",
        f"{ix['files']} files, {ix['audio_s'] / 60:.1f} min of audio, CPU time of this process and its "
        "ffmpeg children:",
        "",
        "| | x realtime |",
        "| --- | --- |",
        f"| decode only (ffmpeg to 8 kHz mono; the baseline) | {ix['decode_only_x_per_core']:.0f}x per core |",
        f"| decode + fingerprint + sha256 | **{ix['index_x_per_core']:.0f}x per core** "
        f"({ix['index_x_per_core'] / ix['decode_only_x_per_core']:.2f} of the baseline) |",
        f"| `index_library`, 1 process, wall clock | {ix['index_x_wall_1_process']:.0f}x |",
        f"| `index_library`, 2 processes, wall clock | {ix['index_x_wall_2_processes']:.0f}x |",
        "",
    ]
    if res.get("large"):
        lines += [
            *accuracy.large_section(res["large"], accuracy.corpus_bytes(res.get("accuracy"))),
            "",
        ]
    if lay:
        lines += [
            f"## Posting layouts (on one {lay[0]['shard_hours']:.0f}-hour shard; 3000-key lookups)",
            "",
            "| layout | bytes per posting | lookup p50 |",
            "| --- | --- | --- |",
        ]
        for r in lay:
            ms = "-" if np.isnan(r["lookup_ms_p50"]) else f"{r['lookup_ms_p50']:.1f} ms"
            lines.append(f"| {r['layout']} | {r['bytes_per_posting']:.2f} | {ms} |")
        lines += [
            "",
            "Packed 22-bit keys instead of xxhash64 digests: a digest carries no more information "
            "(the (f1, f2, dt) triple is 22 bits) but needs 8 bytes per key instead of 4, i.e. 12 "
            "instead of 8 bytes per posting in the flat sorted-array layout, and it makes "
            "neighbouring keys unrelated. Packed keys cannot collide. A shard uses whichever "
            "sorted-array layout is smallest (fingerprint/index.py): flat for tiny shards, CSR "
            "for small ones, the key bitmap from a few hours up.",
            "",
        ]
    # Every section between markers that this run does not write (benchmarks run on their own,
    # figures written by hand) is kept as it is, from the first such marker on; the transcript
    # search, serving and command start sections are then refreshed from their own figures.
    old = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    kept = ""
    for i, line in enumerate(old.splitlines(keepends=True)):
        if line.startswith("<!--") and not line.startswith(OWN_MARKERS) and "/" not in line[:6]:
            kept = "".join(old.splitlines(keepends=True)[i:])
            break
    RESULTS_MD.write_text("\n".join(lines).rstrip("\n") + "\n\n" + kept)
    for start, end, section in (
        (
            search_snapshot.SECTION_START,
            search_snapshot.SECTION_END,
            search_snapshot.results_section(),
        ),
        (serve.SECTION_START, serve.SECTION_END, serve.results_section()),
        (cli_start.START, cli_start.END, cli_start.results_section()),
    ):
        if section:
            replace_section(start, end, section)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=1000.0, help="size of the simulated snapshot")
    ap.add_argument(
        "--previous", metavar="REF", help="the previous matcher (see benchmarks.accuracy)"
    )
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--clips-per-seed", type=int, default=10)
    ap.add_argument("--unseen-per-seed", type=int, default=3)
    ap.add_argument("--large-clips", type=int, default=40)
    ap.add_argument("--hard-clips", type=int, default=12)
    ap.add_argument(
        "--skip-sim", action="store_true", help="skip the simulated snapshot (b, layouts)"
    )
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    res: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE.parent
        ).stdout.strip(),
    }
    log("building the corpus")
    corpus = build_corpus(DATA / "corpus")
    with Snapshot.open(corpus.snapshot) as snap:
        info = snap.info()
    res["corpus"] = {
        "episodes": info["episodes"],
        "hours": info["hours"],
        "bytes_per_hour": info["bytes_per_hour"],
    }
    log("indexing speed")
    res["indexing"] = bench_indexing(corpus)
    log("accuracy, and the simulated snapshot")
    res.update(
        accuracy.measure(
            previous=args.previous,
            seeds=args.seeds,
            clips_per_seed=args.clips_per_seed,
            unseen_per_seed=args.unseen_per_seed,
            hours=0.0 if args.skip_sim else args.hours,
            large_clips_per_length=args.large_clips,
            hard_clips=args.hard_clips,
        )
    )
    if not args.skip_sim:
        log("layouts")
        res["layouts"] = bench_layouts(args.hours)
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (HERE / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    write_results(res)
    log(RESULTS_MD.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
