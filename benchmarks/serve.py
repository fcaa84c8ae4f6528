"""Serving speed: POST /match under concurrent load, start to first answer, version pickup.

``python -m benchmarks.serve [--hours 1000] [--clients 8] [--seconds 20]``

- The snapshot is the benchmark corpus (benchmarks/.data/corpus, built by benchmarks.run /
  benchmarks.accuracy), plus ``--hours`` of simulated shards (benchmarks/.data/sim-<H>h, built
  once: minutes for 1,000 h), published to a local bucket and pulled into a served directory.
- Clips: 16 five-second mp3 clips of real corpus episodes.
- In-process, per clip, each against its baseline in the same run: decoding the upload inside
  the process (PyAV) against the ffmpeg command; looking every shard up in one pass
  (StackedPostings) against shard by shard; and the whole match.
- Servers: ``citywok serve`` as it starts by default (one worker per core, uploads decoded in
  the worker) against the previous configuration (one worker, the ffmpeg command per upload),
  each under the same load from another process: 1 client (the service time), then
  ``--clients`` clients, each a keep-alive connection posting clips back to back (plain
  ``http.client`` with the multipart bodies built beforehand, so that the load generator takes
  as little of the shared cores as it can). CPU per request is measured for the server's
  processes and for the load generator.
- Start to first answer: from spawning ``citywok serve`` to the first successful POST /match.
- Version pickup: a new version is published and pulled while the load runs; the time from the
  switch of DIR/current to /healthz naming it (poll interval 0.2 s), and the failed requests.

Writes benchmarks/serve.json and its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from citywok_pipeline.blobstore import LocalBlobStore
from citywok_pipeline.fingerprint.audio import decode, decode_bytes
from citywok_pipeline.fingerprint.index import lookup_part_by_part
from citywok_pipeline.fingerprint.matcher import DEFAULT_MATCH_PARAMS, fingerprint, match_samples
from citywok_pipeline.publishing import publish_snapshot, pull_version
from citywok_pipeline.serving import default_workers
from citywok_pipeline.snapshot import Snapshot, shard_paths, write_shard

from .middleware import bench_middleware
from .report import machine, replace_section

HERE = Path(__file__).parent
DATA = HERE / ".data"
CITYWOK = Path(sys.executable).parent / "citywok"
RESULTS_JSON = HERE / "serve.json"
SECTION_START, SECTION_END = "<!-- serve -->", "<!-- /serve -->"
CLIP_S = 5.0
BOUNDARY = "citywok-benchmark-boundary"


def snapshot_dir(hours: float) -> Path:
    corpus = DATA / "corpus" / "snapshot"
    if not shard_paths(corpus):
        sys.exit("no benchmark corpus: run `python -m benchmarks.run` once to build it")
    if not hours:
        return corpus
    from .simulate import simulate_snapshot

    sim = DATA / f"sim-{int(hours)}h"
    with Snapshot.open(corpus) as snap:
        keys = np.concatenate([s.postings.posting_keys() for s in snap.shards])
        density = keys.size / sum(e.duration_s for e in snap.episodes)
    simulate_snapshot(sim, hours=hours, key_sample=keys, hashes_per_second=density)
    for p in shard_paths(corpus):
        if not (sim / p.name).exists():
            shutil.copy2(p, sim / p.name)
    return sim


def make_clips(out: Path, n: int = 16) -> list[tuple[str, bytes, str]]:
    """5 s mp3 clips of corpus episodes: (name, bytes, true episode id)."""
    rng = np.random.default_rng(7)
    with Snapshot.open(DATA / "corpus" / "snapshot") as snap:
        episodes = [(e.episode_id, e.source, e.duration_s) for e in snap.episodes]
    media = DATA / "corpus" / "media"
    clips = []
    for i in range(n):
        eid, source, dur = episodes[rng.integers(len(episodes))]
        start = float(rng.uniform(0, max(dur - CLIP_S, 0.1)))
        path = out / f"clip{i}.mp3"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-ss", f"{start:.2f}", "-t", str(CLIP_S),
             "-i", str(media / source), "-ac", "1", str(path)],
            check=True,
        )  # fmt: skip
        clips.append((path.name, path.read_bytes(), eid))
    return clips


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


# In-process


def bench_in_process(snapshot: Path, clips: list[tuple[str, bytes, str]], reps: int = 5) -> dict:
    """Decode, lookup and match per clip, each beside its baseline, interleaved."""
    with Snapshot.open(snapshot) as snap:
        sr = snap.params.sample_rate
        samples = [decode_bytes(data, sample_rate=sr) for _, data, _ in clips]
        parts = [s.postings for s in snap.shards]
        bases = snap.stacked().bases.tolist()
        queries = []
        for x in samples:
            keys = np.sort(fingerprint(x, params=snap.params).keys)
            queries.append((keys, DEFAULT_MATCH_PARAMS.hits_per_hash * keys.size))
        times: dict[str, list[float]] = {k: [] for k in ("libav", "ffmpeg", "stacked", "parts")}
        cpu: dict[str, list[float]] = {"libav": [], "ffmpeg": []}
        match_times, right = [], 0
        # Decoding apart from the lookups: starting ffmpeg slows this process' next memory
        # accesses (its page tables are copied), which is the baseline's cost, not the lookup's.
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(reps):
                for name, data, _ in clips:
                    c0, t0 = _cpu_with_children(), time.perf_counter()
                    decode_bytes(data, sample_rate=sr, suffix=".mp3")
                    c1, t1 = _cpu_with_children(), time.perf_counter()
                    # The previous server: the upload written to a file, ffmpeg run on it.
                    path = Path(tmp) / name
                    path.write_bytes(data)
                    decode(path, sample_rate=sr)
                    c2, t2 = _cpu_with_children(), time.perf_counter()
                    times["libav"].append(t1 - t0)
                    times["ffmpeg"].append(t2 - t1)
                    cpu["libav"].append(c1 - c0)
                    cpu["ffmpeg"].append(c2 - c1)
        for x in samples:
            match_samples(x, snap)
        for _ in range(reps):
            for (_, _, eid), x, (q, budget) in zip(clips, samples, queries, strict=True):
                t0 = time.perf_counter()
                snap.lookup(q, max_hits=budget)
                t1 = time.perf_counter()
                lookup_part_by_part(parts, bases, q, max_hits=budget)
                t2 = time.perf_counter()
                times["stacked"].append(t1 - t0)
                times["parts"].append(t2 - t1)
                t0 = time.perf_counter()
                result = match_samples(x, snap)
                match_times.append(time.perf_counter() - t0)
                right += bool(result.matches) and result.matches[0].episode_id == eid
    out = {k: percentiles(v) for k, v in times.items()}
    for k, v in cpu.items():
        out[k]["cpu_ms"] = round(1e3 * float(np.mean(v)), 2)
    out["match"] = {**percentiles(match_times), "right": right, "clips": len(match_times)}
    out["decode_speedup"] = round(out["ffmpeg"]["p50_ms"] / out["libav"]["p50_ms"], 1)
    out["lookup_speedup"] = round(out["parts"]["p50_ms"] / out["stacked"]["p50_ms"], 2)
    return out


def _cpu_with_children() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# The load generator (its own process)


def _bodies(clips: list[tuple[str, bytes, str]]) -> list[tuple[bytes, str]]:
    out = []
    for name, data, eid in clips:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: audio/mpeg\r\n\r\n"
        ).encode()
        out.append((head + data + f"\r\n--{BOUNDARY}--\r\n".encode(), eid))
    return out


def _client(port: int, bodies: list, stop_at: float, results: list) -> None:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    lat, failed, right, i = [], 0, 0, 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.time() < stop_at:
        body, eid = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/match", body, headers)
            response = conn.getresponse()
            payload = response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok, payload = False, b""
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lat.append(time.perf_counter() - t0)
        if not ok:
            failed += 1
        else:
            matches = json.loads(payload)["matches"]
            right += bool(matches) and matches[0]["episode_id"] == eid
    conn.close()
    results.append((lat, failed, right))


def _load(port: int, clips: list, clients: int, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    bodies = _bodies(clips)
    results: list = []
    stop_at = time.time() + seconds
    cpu0 = time.process_time()
    threads = [
        threading.Thread(target=_client, args=(port, bodies, stop_at, results))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(
        {
            "latencies": [x for r in results for x in r[0]],
            "failed": sum(r[1] for r in results),
            "right": sum(r[2] for r in results),
            "seconds": seconds,
            "client_cpu_s": time.process_time() - cpu0,
        }
    )


def run_load(port: int, clips: list, clients: int, seconds: float, server_pid: int) -> dict:
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    cpu0 = tree_cpu_s(server_pid)
    p = mp.Process(target=_load, args=(port, clips, clients, seconds, out))
    p.start()
    load = out.get()
    p.join()
    server_cpu = tree_cpu_s(server_pid) - cpu0
    n = len(load["latencies"])
    return {
        "clients": clients,
        "requests": n,
        "failed": load["failed"],
        "right_episode": load["right"],
        "requests_per_s": round(n / load["seconds"], 1),
        **percentiles(load["latencies"]),
        "server_cpu_ms_per_request": round(1e3 * server_cpu / max(n, 1), 2),
        "client_cpu_ms_per_request": round(1e3 * load["client_cpu_s"] / max(n, 1), 2),
    }


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and its descendants, live or reaped (from /proc:
    the ffmpeg processes a worker started and waited for are in its cutime and cstime)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


# Servers


def start_server(served: Path, port: int, args: list[str], clip: tuple,
                 env: dict[str, str] | None = None) -> tuple:  # fmt: skip
    """Spawn `citywok serve`; returns (process, seconds to the first successful match)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(CITYWOK), "serve", str(served), "--port", str(port), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )  # fmt: skip
    body, _ = _bodies([clip])[0]
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    while True:
        if proc.poll() is not None:
            sys.exit(f"citywok serve {' '.join(args)} exited {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/match", body, headers)
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.02)
        finally:
            conn.close()


def stop_server(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_server(served: Path, port: int, args: list[str], clips: list, clients: int,
                 seconds: float, sweep: tuple[int, ...] = (),
                 env: dict[str, str] | None = None) -> dict:  # fmt: skip
    """One server under 1 client, ``clients`` clients, and the ``sweep`` counts between."""
    proc, first_answer_s = start_server(served, port, args, clips[0], env)
    try:
        run_load(port, clips, 2, 2.0, proc.pid)  # warm: every worker, every clip's pages
        one = run_load(port, clips, 1, seconds / 2, proc.pid)
        between = [run_load(port, clips, n, seconds / 2, proc.pid) for n in sweep]
        many = run_load(port, clips, clients, seconds, proc.pid)
    finally:
        stop_server(proc)
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else default_workers()
    return {"args": args, "workers": workers, "start_to_first_answer_s": round(first_answer_s, 2),
            "one_client": one, "sweep": between, "concurrent": many}  # fmt: skip


def bench_swap(served: Path, bucket: LocalBlobStore, port: int, clips: list, clients: int) -> dict:
    """A new version published and pulled under load: pickup time and failed requests."""
    proc, _ = start_server(served, port, ["--poll", "0.2"], clips[0])
    try:
        out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        p = mp.Process(target=_load, args=(port, clips, clients, 10.0, out))
        p.start()
        time.sleep(3)
        # v2: the served version with one shard rebuilt (same postings, a new build time).
        staging = served.parent / "v2"
        shutil.copytree(served / "current", staging)
        (staging / "manifest.json").unlink()
        first_shard = shard_paths(staging)[0]
        with Snapshot.open(staging) as s2:
            shard = s2.shards[0]
            eps, season, params = shard.episodes, shard.season, s2.params
            hashes = [shard.postings.episode_hashes(i) for i in range(len(eps))]
        write_shard(first_shard, season=season, episodes=eps, hashes=hashes, params=params,
                    extra={"rebuilt_for": "benchmark"})  # fmt: skip
        v2 = publish_snapshot(staging, bucket).version
        pull_version(bucket, served)
        t_switch = time.perf_counter()
        while _healthz(port).get("version") != v2:
            time.sleep(0.01)
        pickup_s = time.perf_counter() - t_switch
        load = out.get()
        p.join()
    finally:
        stop_server(proc)
    return {
        "version_pickup_s": round(pickup_s, 3),
        "requests": len(load["latencies"]),
        "failed": load["failed"],
        "right_episode": load["right"],
        **percentiles(load["latencies"]),
    }


def previous_code_env(src: Path, work: Path) -> dict[str, str]:
    """An environment in which `citywok` runs the package of another checkout ``src`` (the
    code before a change) instead of this editable install: ``src`` first on the path, and a
    sitecustomize that takes the editable install's finder out."""
    shim = work / "previous-shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
    )
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{shim}"}


def _healthz(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1000, help="simulated hours added (0: corpus)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument(
        "--previous", type=Path, default=None, metavar="CHECKOUT",
        help="also serve with the package of this checkout (e.g. a `git worktree` of the "
        "commit before a change), the default configuration, under the same load",
    )  # fmt: skip
    args = ap.parse_args()

    snap = snapshot_dir(args.hours)
    work = Path(tempfile.mkdtemp(prefix="citywok-serve-bench-"))
    try:
        bucket = LocalBlobStore(work / "bucket")
        t0 = time.perf_counter()
        publish_snapshot(snap, bucket)
        pull_version(bucket, work / "served")
        publish_pull_s = time.perf_counter() - t0
        with Snapshot.open(snap) as s:
            hours = round(sum(e.duration_s for e in s.episodes) / 3600, 1)
        clips = make_clips(work)
        served = work / "served"
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "cores": os.cpu_count(),
            "snapshot_hours": hours,
            "shards": len(shard_paths(snap)),
            "publish_and_pull_s": round(publish_pull_s, 2),
            "in_process": bench_in_process(served / "current", clips),
            "middleware": bench_middleware(served / "current", clips[0][1]),
            "servers": {
                "default": bench_server(
                    served,
                    args.port,
                    [],
                    clips,
                    args.clients,
                    args.seconds,
                    sweep=tuple(n for n in (2, 4) if n < args.clients),
                ),
                "baseline": bench_server(
                    served,
                    args.port,
                    ["--workers", "1", "--decoder", "ffmpeg"],
                    clips,
                    args.clients,
                    args.seconds,
                ),
            },
            "swap": bench_swap(served, bucket, args.port, clips, args.clients),
        }
        if args.previous:
            result["servers"]["previous"] = bench_server(
                served, args.port, [], clips, args.clients, args.seconds,
                env=previous_code_env(args.previous.resolve(), work),
            )  # fmt: skip
            result["servers"]["previous"]["source"] = str(args.previous)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS_JSON.write_text(json.dumps(result, indent=2) + "\n")
    replace_section(SECTION_START, SECTION_END, results_section())
    print(json.dumps(result, indent=2))


def _bound_note(r: dict, c: dict, ip: dict) -> list[str]:
    """What the p50 at ``c['clients']`` clients can be on these cores, and this run's speed."""
    cores = r.get("cores")
    if not cores:
        return []
    cpu = c["server_cpu_ms_per_request"] + c["client_cpu_ms_per_request"]
    return [
        "",
        f"With the {cores} cores saturated, {c['clients']} clients posting back to back wait "
        f"about clients x CPU per request / cores = {c['clients']} x {cpu:.1f} / {cores} = "
        f"{c['clients'] * cpu / cores:.0f} ms each (Little's law); a p50 of 50 ms needs "
        f"{50 * cores / c['clients']:.1f} ms of CPU per request here. This VM's speed drifts "
        "by up to a quarter within an hour: the ffmpeg command's CPU per clip above (the same "
        f"work in every run: {ip['ffmpeg']['cpu_ms']} ms here, 85-107 ms in the runs made while "
        "tuning the server) shows where a run fell.",
    ]


def _middleware_lines(m: dict | None) -> list[str]:
    """What the middleware costs per request (benchmarks/middleware.py), when measured."""
    if not m:
        return []
    o, h = m["overhead_us"], m["healthz_us"]
    lines = [
        f"What the middleware costs per request, in process (ASGI calls, no sockets; best of "
        f"{m['rounds']} rounds of {m['requests_per_round']} GET /healthz, {h['bare']} us bare):",
        "",
        "| middleware | extra per request |",
        "| --- | --- |",
        f"| default (request id, JSON access log, metrics in multiprocess mode, body limits and "
        f"timeouts, uploads per client) | {o['default']} us |",
        f"| everything (and an API key, a rate limit, CORS) | {o['everything']} us |",
        f"| Guard alone / with its rate limit | {o['guard alone']} / {o['guard rate limit']} us |",
        f"| slowapi's rate limit alone (in memory, per process) | {o['slowapi rate limit']} us |",
    ]
    if "match_ms" in m:
        lines += [
            "",
            f"POST /match of a 5 s clip: {m['match_ms']['default']} ms with the default "
            f"middleware, {m['match_ms']['bare']} ms bare ({m['match_overhead_pct']:+}%).",
        ]
    return [*lines, ""]


def results_section() -> list[str]:
    """This benchmark's section of RESULTS.md, from its last run (none before one)."""
    if not RESULTS_JSON.exists():
        return []
    r = json.loads(RESULTS_JSON.read_text())
    ip, srv, swap = r["in_process"], r["servers"], r["swap"]
    d, b = srv["default"], srv["baseline"]

    def row(name: str, s: dict) -> str:
        c = s["concurrent"]
        return (
            f"| {name} | {s['start_to_first_answer_s']} s | {s['one_client']['p50_ms']} ms | "
            f"{c['requests_per_s']} | **{c['p50_ms']} ms** | {c['p99_ms']} ms | "
            f"{c['server_cpu_ms_per_request']} + {c['client_cpu_ms_per_request']} ms | "
            f"{c['failed']} | {c['right_episode']}/{c['requests']} |"
        )

    clients = d["concurrent"]["clients"]
    return [
        SECTION_START,
        "## Serving",
        "",
        f"Run {r['date']} on {r['machine']} by `python -m benchmarks.serve` (raw numbers: "
        f"`benchmarks/serve.json`): a {r['snapshot_hours']:,}-hour snapshot ({r['shards']} "
        "shards: the simulated library above plus the corpus) published to a local bucket, "
        "pulled, and served by `citywok serve`; 5 s mp3 clips of corpus episodes posted by "
        "another process on the same two cores.",
        "",
        "Per clip, in one process, each against its baseline in the same run:",
        "",
        "| | new | baseline | ratio |",
        "| --- | --- | --- | --- |",
        f"| decode the upload | in-process (PyAV) p50 {ip['libav']['p50_ms']} ms, "
        f"{ip['libav']['cpu_ms']} ms CPU | ffmpeg command p50 {ip['ffmpeg']['p50_ms']} ms, "
        f"{ip['ffmpeg']['cpu_ms']} ms CPU | **{ip['decode_speedup']}x** |",
        f"| look the hashes up in every shard | one pass (StackedPostings) p50 "
        f"{ip['stacked']['p50_ms']} ms | shard by shard p50 {ip['parts']['p50_ms']} ms | "
        f"**{ip['lookup_speedup']}x** |",
        f"| the whole match (decoded clip) | p50 {ip['match']['p50_ms']} ms, p99 "
        f"{ip['match']['p99_ms']} ms, {ip['match']['right']}/{ip['match']['clips']} right | | |",
        "",
        f"POST /match over HTTP, 1 client, then {clients} clients posting back to back (CPU per "
        "request: the server's processes + the load generator's):",
        "",
        "| server | start to first answer | 1 client p50 | requests/s | p50 | p99 | CPU per "
        "request | failed | right |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        row(f"default: {d['workers']} workers, decoding in-process", d),
        *(
            [row("previous code, default configuration", srv["previous"])]
            if "previous" in srv
            else []
        ),
        row("baseline: 1 worker, ffmpeg per upload", b),
        "",
        *_middleware_lines(r.get("middleware")),
        "The default server's latency as clients are added (each posting back to back, so "
        "from about as many clients as cores on, they queue: the p50 approaches clients x CPU "
        "per request / cores):",
        "",
        "| clients | requests/s | p50 | p99 | CPU per request |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {c['clients']} | {c['requests_per_s']} | {c['p50_ms']} ms | {c['p99_ms']} ms | "
            f"{c['server_cpu_ms_per_request']} + {c['client_cpu_ms_per_request']} ms |"
            for c in (d["one_client"], *d.get("sweep", []), d["concurrent"])
        ),
        *_bound_note(r, d["concurrent"], ip),
        "",
        f"New version picked up under load (poll 0.2 s): **{swap['version_pickup_s']} s**, "
        f"{swap['failed']} failed of {swap['requests']} requests during the swap "
        f"({swap['right_episode']} right).",
        SECTION_END,
    ]


if __name__ == "__main__":
    main()
