"""The library graph kept up to date in place as seasons are rebuilt, against building it afresh.

``python -m benchmarks.graph_update [--n 200000] [--shards 20] [--rounds 10] [--queries 200]``
(under ``flock /tmp/citywok-bench.lock`` on a shared machine).

A library of ``--n`` simulated segments (:func:`benchmarks.search_pg.iter_simulated_vectors`,
the mixture :mod:`benchmarks.search_snapshot` searches, seed 0) in ``--shards`` seasons of
whole videos, and its library graph built in full (:func:`build_library_graph`,
:data:`LIBRARY_PARAMS`). Then, ``--rounds`` times, one season is rebuilt with new segments
(rows of the same mixture that were never in the library: every vector new, the hard case; a
season that gains an episode keeps most of its vectors) and the graph brought up to date the
way ``citywok index`` does after the shards: :func:`build_library_graph` again, which updates
it in place while the rows removed since its full build stay within
:data:`MAX_REMOVED_SHARE`. After each round: the update's wall and CPU seconds, and recall@10
of :meth:`SegmentSearcher.search_vector` at the graph's default ef against exact search over
the library as it is then. Last, the same library's graph built afresh, its time and recall
beside.

Writes ``benchmarks/graph_update.json`` and its section of ``benchmarks/RESULTS.md``. Work
files go to ``benchmarks/.data/graph_update`` (rebuilt each run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from citywok_pipeline.snapshot import Snapshot
from citywok_pipeline.snapshot.library_graph import (
    INDEX_FILE,
    LIBRARY_PARAMS,
    MAX_REMOVED_SHARE,
    build_library_graph,
)
from citywok_pipeline.transcripts.search import SegmentSearcher

from .report import machine, replace_section
from .search_pg import iter_simulated_vectors, simulate_texts
from .search_snapshot import (
    DATA,
    _global_rows,
    exact_top,
    load_now,
    log,
    season_bounds,
    write_library,
    write_season,
)

HERE = Path(__file__).parent
RESULTS_JSON = HERE / "graph_update.json"
SECTION = ("<!-- graph_update -->", "<!-- /graph_update -->")


def simulate(n: int, pool: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n + pool`` float16 rows of the mixture (the library, then the rows seasons are
    rebuilt with) and ``queries`` float32 queries from it."""
    rows = np.empty((n + pool, 384), np.float16)
    extra = []
    total = n + pool + queries
    for lo, block in iter_simulated_vectors(total, 384, seed=seed, clusters=max(8, n // 400)):
        split = max(0, min(len(block), n + pool - lo))
        rows[lo : lo + split] = block[:split]
        extra.append(block[split:])
    return rows, np.concatenate(extra)


def recall(directory: Path, vectors: np.ndarray, q: np.ndarray) -> float:
    truth = [set(row.tolist()) for row in exact_top(vectors, q)]
    with Snapshot.open(directory) as snap:
        searcher = SegmentSearcher(snap)
        assert searcher.library is not None, searcher.notes
        rows = _global_rows(searcher)
        got = [{int(rows[p][r]) for p, r, _ in searcher.search_vector(one, limit=10)} for one in q]
    return round(float(np.mean([len(g & t) / 10 for g, t in zip(got, truth, strict=True)])), 4)


def timed_build(directory: Path) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    with Snapshot.open(directory) as snap:
        info = build_library_graph(snap, min_segments=0)
    assert info is not None
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
        "updated": info["updated"],
        "rows_added": info["rows_added"],
        "rows_removed": info["rows_removed"],
        "removed_since_build": info["removed_since_build"],
        "load": load_now(),
    }


def run(n: int, shards: int, rounds: int, queries: int, seed: int = 0) -> dict[str, Any]:
    bounds = season_bounds(n, shards)
    sizes = np.diff(bounds)
    order = [(r * 7) % shards for r in range(rounds)]  # each season once (7 and 20 coprime)
    pool = int(sum(sizes[s] for s in order))
    rows, q = simulate(n, pool, queries, seed)
    vectors = rows[:n].copy()
    texts = simulate_texts(n, seed=seed)
    directory = DATA / "graph_update"
    if directory.exists():
        shutil.rmtree(directory)
    built = write_library(directory, vectors, texts, shards, seed=seed)
    log(f"{n} segments in {shards} seasons ({built['build_s']} s)")
    first = timed_build(directory)
    first["recall_at_10"] = recall(directory, vectors, q)
    log(f"full build: {first}")
    steps = []
    next_row = n
    for r, s in enumerate(order):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        vectors[lo:hi] = rows[next_row : next_row + hi - lo]
        next_row += hi - lo
        write_season(directory, s, vectors, texts, lo, hi)
        step = {"round": r + 1, "season_rows": hi - lo, **timed_build(directory)}
        step["recall_at_10"] = recall(directory, vectors, q)
        log(f"round {r + 1}: {step}")
        steps.append(step)
    (directory / INDEX_FILE).unlink()  # the same library, its graph afresh
    afresh = timed_build(directory)
    afresh["recall_at_10"] = recall(directory, vectors, q)
    log(f"afresh: {afresh}")
    return {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n": n,
        "shards": shards,
        "queries": queries,
        "ann": LIBRARY_PARAMS.to_dict(),
        "expansion_search": LIBRARY_PARAMS.expansion_search,
        "max_removed_share": MAX_REMOVED_SHARE,
        "full_build": first,
        "rounds": steps,
        "afresh": afresh,
    }


def section(r: dict[str, Any]) -> list[str]:
    per_season = r["rounds"][0]["season_rows"] if r["rounds"] else 0
    lines = [
        SECTION[0],
        "## The library graph updated in place (transcript search)",
        "",
        f"Run {r['date']} on {r['machine']} by `python -m benchmarks.graph_update --n {r['n']} --shards "
        f"{r['shards']} --rounds {len(r['rounds'])}`. {r['n']:,} simulated segments in "
        f"{r['shards']} seasons of {per_season:,} (about {per_season * 5 / 3600:.0f} hours of "
        "speech each at one segment per 5 s); each round rebuilds one season with segments "
        "that were never in the library and runs `build_library_graph` as `citywok index` "
        f"does; recall@10 of {r['queries']} queries at ef {r['expansion_search']} against exact "
        "search over the library as it is then.",
        "",
        "| graph | rows removed since its full build | build wall s | CPU s | recall@10 | load |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    f = r["full_build"]
    lines.append(
        f"| full build | 0 | {f['wall_s']} | {f['cpu_s']} | {f['recall_at_10']} | {f['load']} |"
    )
    for s in r["rounds"]:
        how = "updated in place" if s["updated"] else "built afresh (past the share)"
        lines.append(
            f"| round {s['round']}: {how} | {s['removed_since_build']:,} | {s['wall_s']} | "
            f"{s['cpu_s']} | {s['recall_at_10']} | {s['load']} |"
        )
    a = r["afresh"]
    lines += [
        f"| the last round's library, afresh | 0 | {a['wall_s']} | {a['cpu_s']} | "
        f"**{a['recall_at_10']}** | {a['load']} |",
        "",
        f"An update costs what the season's rows cost plus reading and writing the graph file; "
        f"it is built afresh once the rows removed since its full build pass "
        f"{r['max_removed_share']:.0%} of its rows (`MAX_REMOVED_SHARE`).",
        SECTION[1],
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="simulated segments (200000)")
    ap.add_argument("--shards", type=int, default=20, help="seasons (20)")
    ap.add_argument("--rounds", type=int, default=10, help="seasons rebuilt in turn (10)")
    ap.add_argument("--queries", type=int, default=200, help="queries for recall (200)")
    ap.add_argument("--no-write", action="store_true", help="print, write no results")
    args = ap.parse_args(argv)
    if args.rounds > args.shards or args.shards % 7 == 0:
        ap.error("--rounds must be at most --shards, and --shards not a multiple of 7")
    result = run(args.n, args.shards, args.rounds, args.queries)
    print(json.dumps(result, indent=1))
    if not args.no_write:
        RESULTS_JSON.write_text(json.dumps(result, indent=1) + "\n")
        replace_section(*SECTION, section(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
