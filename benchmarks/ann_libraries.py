"""Which ANN library goes into the shards: usearch, faiss-cpu and hnswlib side by side.

``flock /tmp/citywok-bench.lock python -m benchmarks.ann_libraries [--shards 20]``
(``pip install faiss-cpu hnswlib`` first: they are not the project's dependencies).

The simulated segments of ``benchmarks.search_pg`` (``--shards`` x 10,000, a season's worth
each), one HNSW graph per shard (M 16, ef_construction 128, one thread), searched one query at a
time shard by shard, each shard's candidates scored exactly against the float16 vectors and
merged, as ``SegmentSearcher`` does; recall@10 against exact search. The figures go to
``benchmarks/ann_libraries.json`` and the transcript-search section of RESULTS.md names them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from citywok_pipeline.snapshot.segments import ann_vectors

from .report import machine, replace_section
from .search_pg import simulate_vectors

HERE = Path(__file__).resolve().parent
PER_SHARD = 10_000


def log(msg: str) -> None:
    print(f"[ann_libraries] {msg}", file=sys.stderr, flush=True)


def _usearch(dtype: str) -> tuple[Any, Any, str]:
    from usearch.index import Index

    def build(x: np.ndarray) -> tuple[Any, int]:
        ix = Index(ndim=x.shape[1], metric="ip", dtype=dtype, connectivity=16, expansion_add=128)
        data = ann_vectors(x) if dtype == "i8" else x.astype(np.float16)
        ix.add(np.arange(len(x), dtype=np.uint64), data, threads=1)
        buf = ix.save()
        view = Index(ndim=x.shape[1], metric="ip", dtype=dtype)
        view.view(buf)  # in place, as the shard's map is viewed
        view._keep = buf
        return view, len(buf)

    def search(ix: Any, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        ix.expansion_search = max(ef, k)
        data = ann_vectors(q) if dtype == "i8" else q.astype(np.float16)
        return np.asarray(ix.search(data, k).keys, np.int64)

    return build, search, f"usearch {dtype} (viewed from a buffer: shared map)"


def _faiss(kind: str) -> tuple[Any, Any, str]:
    import faiss

    faiss.omp_set_num_threads(1)

    def build(x: np.ndarray) -> tuple[Any, int]:
        if kind == "flat":
            ix = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
        else:
            ix = faiss.IndexHNSWSQ(x.shape[1], faiss.ScalarQuantizer.QT_8bit, 16,
                                   faiss.METRIC_INNER_PRODUCT)  # fmt: skip
            ix.train(x)
        ix.hnsw.efConstruction = 128
        ix.add(x)
        return ix, int(faiss.serialize_index(ix).size)

    def search(ix: Any, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        ix.hnsw.efSearch = max(ef, k)
        _, keys = ix.search(q[None, :], k)
        return keys[0].astype(np.int64)

    return build, search, f"faiss HNSW{'Flat' if kind == 'flat' else 'SQ8'} (loaded per process)"


def _hnswlib() -> tuple[Any, Any, str]:
    import hnswlib

    def build(x: np.ndarray) -> tuple[Any, int]:
        ix = hnswlib.Index(space="ip", dim=x.shape[1])
        ix.init_index(max_elements=len(x), ef_construction=128, M=16)
        ix.add_items(x, np.arange(len(x)), num_threads=1)
        return ix, len(x) * (x.shape[1] * 4 + 16 * 2 * 4 + 16)

    def search(ix: Any, q: np.ndarray, k: int, ef: int) -> np.ndarray:
        ix.set_ef(max(ef, k))
        keys, _ = ix.knn_query(q[None, :], k=k, num_threads=1)
        return keys[0].astype(np.int64)

    return build, search, "hnswlib (loaded per process)"


LIBRARIES = {
    "usearch-i8": lambda: _usearch("i8"),
    "usearch-f16": lambda: _usearch("f16"),
    "faiss-hnsw-flat": lambda: _faiss("flat"),
    "faiss-hnsw-sq8": lambda: _faiss("sq8"),
    "hnswlib": _hnswlib,
}


def run(shards: int, queries: int, efs: tuple[int, ...], libraries: list[str]) -> dict[str, Any]:
    n = shards * PER_SHARD
    drawn = simulate_vectors(n + queries, 384, seed=0, clusters=max(8, n // 400))
    vectors, q = drawn[:n], drawn[n:]
    v16 = vectors.astype(np.float16)
    truth = np.argsort(-(q @ vectors.T), axis=1)[:, :10]
    out: dict[str, Any] = {"segments": n, "shards": shards, "queries": queries, "libraries": {}}
    for name in libraries:
        build, search, label = LIBRARIES[name]()
        t0 = time.process_time()
        built = [build(vectors[s * PER_SHARD : (s + 1) * PER_SHARD]) for s in range(shards)]
        build_cpu = (time.process_time() - t0) / shards
        entry: dict[str, Any] = {
            "label": label,
            "build_cpu_s_per_shard": round(build_cpu, 2),
            "bytes_per_segment": round(sum(b for _, b in built) / n, 1),
            "runs": [],
        }
        for ef in efs:
            cpu, recalls = [], []
            for qi, query in enumerate(q):
                t0 = time.thread_time()
                rows, scores = [], []
                for s, (ix, _) in enumerate(built):
                    keys = search(ix, query, 20, ef)
                    keys = keys[(keys >= 0) & (keys < PER_SHARD)] + s * PER_SHARD
                    rows.append(keys)
                    scores.append(v16[keys].astype(np.float32) @ query)
                r, sc = np.concatenate(rows), np.concatenate(scores)
                top = r[np.argsort(-sc)[:10]]
                cpu.append(time.thread_time() - t0)
                recalls.append(len(set(top.tolist()) & set(truth[qi].tolist())) / 10)
            entry["runs"].append({
                "ef": ef,
                "cpu_p50_ms": round(float(np.median(cpu)) * 1000, 2),
                "recall_at_10": round(float(np.mean(recalls)), 4),
            })  # fmt: skip
            log(f"{name} ef {ef}: {entry['runs'][-1]}")
        out["libraries"][name] = entry
        del built
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES))
    args = parser.parse_args(argv)
    result = run(args.shards, args.queries, tuple(args.ef), args.libraries)
    result["load"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    result["date"], result["machine"] = time.strftime("%Y-%m-%d"), machine()
    (HERE / "ann_libraries.json").write_text(json.dumps(result, indent=2) + "\n")
    replace_section(SECTION_START, SECTION_END, results_section())
    print(json.dumps(result, indent=2))
    return 0


SECTION_START, SECTION_END = "<!-- ann_libraries -->", "<!-- /ann_libraries -->"


def results_section() -> list[str]:
    """The library comparison's section of RESULTS.md, from its last run."""
    path = HERE / "ann_libraries.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    lines = [
        SECTION_START,
        "## ANN libraries for the shards' graphs",
        "",
        f"Run {r['date']} on {r['machine']} by `flock /tmp/citywok-bench.lock python -m "
        f"benchmarks.ann_libraries` (load average {r['load']} at the end: other work shared the "
        f"cores). {r['segments']:,} simulated segments in {r['shards']} shards of 10,000 (a "
        "season's worth), one HNSW graph per shard (M 16, ef_construction 128, one thread), "
        f"{r['queries']} queries one at a time, each shard's 20 candidates scored exactly and "
        "merged; CPU time of the query's thread (p50).",
        "",
        "| library | build s of CPU per shard | bytes/segment | ef | cpu p50 ms | recall@10 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for entry in r["libraries"].values():
        for run in entry["runs"]:
            lines.append(
                f"| {entry['label']} | {entry['build_cpu_s_per_shard']} | "
                f"{entry['bytes_per_segment']:.0f} | {run['ef']} | {run['cpu_p50_ms']} | "
                f"{run['recall_at_10']:.3f} |"
            )
    lines += [
        "",
        "usearch with int8 in the graph is the one in the shards. In speed and recall the "
        "libraries are within this run's noise of each other at the same ef (graph search is "
        "memory-bound: float16/float32 graphs cost more per visited node only where the "
        "library does not make up for it); usearch int8 builds fastest (half the CPU of the "
        "others), is as small as faiss's 8-bit graph, and is the only one searched in place "
        "from a buffer: the shard's memory map, shared by every server worker. faiss and "
        "hnswlib read an index into each process's memory (faiss's `IO_FLAG_MMAP` maps a file "
        "of its own, which a one-file LMDB shard does not have; hnswlib has no mapping, and its "
        "last release is from 2023). hnswlib's size is its in-memory layout, estimated.",
        SECTION_END,
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
