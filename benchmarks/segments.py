"""Long recordings as segments: excerpts found, boundaries, offsets, unseen audio left silent,
shared intros, the delay on a live input, memory over an hour, and the cost.

    flock /tmp/citywok-bench.lock python -m benchmarks.segments [--seeds 6] [--hours 1000]
        [--live-seconds 120] [--long-minutes 60]

- Library: the benchmark corpus (benchmarks/.data/corpus, as benchmarks.run builds it: 3 shows
  x 2 seasons x 4 episodes of 120 s, a 10 s intro shared by each show's episodes); built here
  when it is missing.
- Recordings (demo/recording.py): 4-8 excerpts of 6-20 s cut from the episodes' own audio
  (15% of them from inside a show's intro instead), with 2-10 s of unseen audio (speech over
  music in no episode) between them (15% back to back), starting and ending with unseen
  audio; then a degradation over the whole recording (demo/degrade.py). ``--seeds``
  recordings per degradation, different for each degradation.
- An excerpt is found when one segment names its episode with both boundaries within 1 s and
  the offset within 1.5 s; an unseen stretch is silent when no segment covers any of it
  farther than 1 s from its ends; an intro is right when its segment is ambiguous and names
  exactly the show's episodes.
- Delay on a live input: each recording is fed in 0.1 s chunks (the answer does not depend on
  the chunks; tests/fingerprint/test_recording.py checks it): the audio past an excerpt's end
  that was fed before its segment came back, plus the time one step of work takes. Then the
  real thing: one recording written at its real pace into ``citywok match DIR - --segments
  --json``'s standard input, and the wall-clock time from writing an excerpt's last byte to
  reading its segment (``--live-seconds`` caps the recording's length; 0 skips it).
- Memory: ``--long-minutes`` of recordings fed one after another into one Segmenter; the
  process's anonymous memory and the segmenter's own buffers, sampled every minute.
- Cost, and unseen audio at scale: with ``--hours``, the recordings (clean and noise 10 dB) are
  segmented against the corpus plus simulated shards (benchmarks/.data/sim-<H>h, as
  benchmarks.run builds them); CPU per second of audio against the baseline of matching the
  same windows alone (what the segmenter adds: the hits along each line, the tracking).

Writes benchmarks/segments.json and its section of benchmarks/RESULTS.md. Note the load
(``uptime``) beside the figures: time figures move with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from citywok_pipeline.demo.degrade import DEGRADATIONS
from citywok_pipeline.demo.library import encode, render_unseen_samples
from citywok_pipeline.demo.recording import Part, Recording, Source, compose_recording
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.fingerprint.matcher import match_samples
from citywok_pipeline.fingerprint.recording import DEFAULT_SEGMENT_PARAMS, Segment, Segmenter
from citywok_pipeline.library import scan_media
from citywok_pipeline.snapshot import Snapshot, shard_paths

from .accuracy import WORK_RATE, build_corpus
from .report import machine, replace_section

HERE = Path(__file__).parent
DATA = HERE / ".data"
CITYWOK = Path(sys.executable).parent / "citywok"
RESULTS_JSON = HERE / "segments.json"
SECTION_START, SECTION_END = "<!-- segments -->", "<!-- /segments -->"
CORPUS_INTRO_S = 10.0  # build_corpus's default
BOUNDARY_S, OFFSET_S = 1.0, 1.5
# The "clean, noisy or re-encoded"; the others are harder cases, measured beside them.
TARGETS = ("clean", "noise_10db", "mp3_32k")
DEGRADED = (*TARGETS, "noise_0db", "telephone", "reverb", "speed_+1pct")
SPEED = {"speed_+1pct": 1.01}
CHUNK_S = 0.1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def corpus_snapshot() -> Path:
    snap = DATA / "corpus" / "snapshot"
    if not shard_paths(snap):
        log("building the corpus (benchmarks.accuracy.build_corpus)")
        build_corpus(DATA / "corpus")
    return snap


def large_snapshot(corpus: Path, hours: float) -> Path:
    """The corpus plus ``hours`` of simulated shards, as benchmarks.run and benchmarks.serve
    build them (reused when already there)."""
    from .simulate import simulate_snapshot

    sim = DATA / f"sim-{int(hours)}h"
    with Snapshot.open(corpus) as snap:
        keys = np.concatenate([s.postings.posting_keys() for s in snap.shards])
        density = keys.size / sum(e.duration_s for e in snap.episodes)
    simulate_snapshot(sim, hours=hours, key_sample=keys, hashes_per_second=density, log=log)
    for p in shard_paths(corpus):
        if not (sim / p.name).exists():
            shutil.copy2(p, sim / p.name)
    return sim


def library_sources(snap: Snapshot) -> tuple[list[Source], dict[str, set[str]]]:
    """Every corpus episode's audio at WORK_RATE, and each show's episode ids."""
    media = DATA / "corpus" / "media"
    files = {f.episode_id: f for f in scan_media(media).files}
    sources, shows = [], defaultdict(set)
    for e in snap.episodes:
        x = decode(files[e.episode_id].path, sample_rate=WORK_RATE)
        sources.append(Source(e.episode_id, x, show=e.show, intro_s=CORPUS_INTRO_S))
        shows[e.show].add(e.episode_id)
    return sources, dict(shows)


def make_recording(
    sources: list[Source], unseen: np.ndarray, degradation: str, seed: int
) -> tuple[Recording, np.ndarray]:
    """A recording and its degraded samples at the index's rate (8 kHz); with a speed change
    the parts' times are scaled to where they lie in the degraded audio."""
    rng = np.random.default_rng([seed, DEGRADED.index(degradation), 13])
    rec = compose_recording(sources, unseen, sample_rate=WORK_RATE, rng=rng)
    x = DEGRADATIONS[degradation](rec.samples, WORK_RATE, rng)
    q = resample_poly(x, 1, 2).astype(np.float32)
    f = SPEED.get(degradation, 1.0)
    if f != 1.0:
        parts = tuple(replace(p, start_s=p.start_s / f, end_s=p.end_s / f) for p in rec.parts)
        rec = Recording(rec.samples, rec.sample_rate, parts)
    return rec, q


def score(
    rec: Recording, segments: list[Segment], shows: dict[str, set[str]], *, speed: float = 1.0
) -> dict:
    """Per excerpt: found and the errors; per intro: right; per unseen stretch: silent."""
    excerpts, intros, unseen = [], [], []
    for p in rec.parts:
        near = [s for s in segments if min(s.end_s, p.end_s) - max(s.start_s, p.start_s) > 0]
        if p.kind == "excerpt":
            mine = [s for s in near if s.episode_id == p.key and not s.ambiguous]
            if not mine:
                excerpts.append({"found": False, "start": None, "end": None, "offset": None})
                continue
            s = max(mine, key=lambda s: min(s.end_s, p.end_s) - max(s.start_s, p.start_s))
            errs = {
                "start": s.start_s - p.start_s,
                "end": s.end_s - p.end_s,
                "offset": s.offset_s - (p.offset_s + (s.start_s - p.start_s) * speed),
            }
            ok = max(abs(errs["start"]), abs(errs["end"])) <= BOUNDARY_S
            excerpts.append({"found": ok and abs(errs["offset"]) <= OFFSET_S, **errs})
        elif p.kind == "intro":
            intros.append(
                any(
                    s.ambiguous and {m.episode_id for m in s.matches} == shows[p.show] for s in near
                )
            )
        else:
            a, b = p.start_s + BOUNDARY_S, p.end_s - BOUNDARY_S
            unseen.append(not any(min(s.end_s, b) > max(s.start_s, a) for s in segments))
    return {"excerpts": excerpts, "intros": intros, "unseen": unseen}


def run_live(
    snap: Snapshot, q: np.ndarray
) -> tuple[list[tuple[Segment, float]], list[float], tuple[Segment, ...]]:
    """Feed ``q`` in CHUNK_S chunks: each segment with the audio fed when it came back, the
    time each feed took, and the final answer (pieces of one excerpt joined)."""
    seg = Segmenter(snap)
    n = round(CHUNK_S * seg.rate)
    returned, steps = [], []
    for i in range(0, q.size, n):
        t0 = time.perf_counter()
        out = seg.feed(q[i : i + n])
        steps.append(time.perf_counter() - t0)
        returned += [(s, seg.duration_s) for s in out]
    returned += [(s, seg.duration_s) for s in seg.finish()]
    return returned, steps, seg.result().segments


def delays(rec: Recording, returned: list[tuple[Segment, float]]) -> list[float]:
    """For each excerpt, the audio past its end fed before a segment of it first came back."""
    out = []
    for p in rec.excerpts():
        first = [
            fed
            for s, fed in returned
            if min(s.end_s, p.end_s) - max(s.start_s, p.start_s) > 0
            and (s.episode_id == p.key or s.ambiguous)
        ]
        if first:
            out.append(min(first) - p.end_s)
    return out


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(np.abs(xs), q)) if xs else None


def summarise(scores: list[dict]) -> dict:
    ex = [e for s in scores for e in s["excerpts"]]
    found = [e for e in ex if e["start"] is not None]
    intros = [i for s in scores for i in s["intros"]]
    unseen = [u for s in scores for u in s["unseen"]]
    return {
        "excerpts": len(ex),
        "found": float(np.mean([e["found"] for e in ex])) if ex else None,
        "start_err_p50": pct([e["start"] for e in found], 50),
        "start_err_p95": pct([e["start"] for e in found], 95),
        "end_err_p50": pct([e["end"] for e in found], 50),
        "end_err_p95": pct([e["end"] for e in found], 95),
        "offset_err_p95": pct([e["offset"] for e in found], 95),
        "intros": len(intros),
        "intros_ambiguous": float(np.mean(intros)) if intros else None,
        "unseen": len(unseen),
        "unseen_silent": float(np.mean(unseen)) if unseen else None,
    }


def bench_accuracy(snap: Snapshot, sources, shows, unseen, seeds: int) -> dict:
    by_deg: dict[str, dict] = {}
    all_delays: list[float] = []
    steps: list[float] = []
    cpu = audio_s = 0.0
    for name in DEGRADED:
        scores = []
        for seed in range(seeds):
            rec, q = make_recording(sources, unseen, name, seed)
            t0 = time.process_time()
            returned, step_times, final = run_live(snap, q)
            cpu += time.process_time() - t0
            audio_s += q.size / snap.params.sample_rate
            steps += step_times
            scores.append(score(rec, list(final), shows, speed=SPEED.get(name, 1.0)))
            all_delays += delays(rec, returned)
        by_deg[name] = summarise(scores)
        r = by_deg[name]
        log(f"  {name}: found {r['found']:.1%} of {r['excerpts']}, unseen silent "
            f"{r['unseen_silent']:.1%}, intros {r['intros_ambiguous']}")  # fmt: skip
    return {
        "per_degradation": by_deg,
        "targets": summarise_targets(by_deg),
        "delay_audio_s": {
            "p50": float(np.percentile(all_delays, 50)),
            "p95": float(np.percentile(all_delays, 95)),
            "max": float(np.max(all_delays)),
            "n": len(all_delays),
        },
        "step_ms_p99": 1e3 * float(np.percentile(steps, 99)),
        "step_ms_max": 1e3 * float(np.max(steps)),
        "x_realtime_cpu": audio_s / cpu,
        "audio_s": audio_s,
    }


def _final(snap: Snapshot, q: np.ndarray) -> tuple[Segment, ...]:
    seg = Segmenter(snap)
    n = 10 * seg.rate
    for i in range(0, q.size, n):
        seg.feed(q[i : i + n])
    seg.finish()
    return seg.result().segments


def summarise_targets(by_deg: dict[str, dict]) -> dict:
    rows = [by_deg[n] for n in TARGETS]
    total = sum(r["excerpts"] for r in rows)
    return {
        "found": sum(r["found"] * r["excerpts"] for r in rows) / total,
        "unseen_silent": sum(r["unseen_silent"] * r["unseen"] for r in rows)
        / sum(r["unseen"] for r in rows),
        "excerpts": total,
    }


def bench_cli_live(snap_dir: Path, sources, unseen, seconds: float) -> dict:
    """One recording written at its real pace into `citywok match DIR - --segments --json`."""
    rng = np.random.default_rng(404)
    rec = compose_recording(sources, unseen, sample_rate=WORK_RATE, rng=rng)
    n = min(rec.samples.size, round(seconds * WORK_RATE))
    parts = [p for p in rec.excerpts() if p.end_s * WORK_RATE <= n]
    tmp = DATA / "segments-live.wav"
    encode(rec.samples[:n], tmp, sample_rate=WORK_RATE)
    data = tmp.read_bytes()
    header, body = data[:44], data[44:]
    proc = subprocess.Popen(
        [str(CITYWOK), "match", str(snap_dir), "-", "--segments", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    arrivals: list[tuple[float, dict]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            arrivals.append((time.monotonic(), json.loads(line)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert proc.stdin is not None
    proc.stdin.write(header)
    t0 = time.monotonic()
    step = round(CHUNK_S * WORK_RATE) * 2
    for i in range(0, len(body), step):
        time.sleep(max(0.0, t0 + i / 2 / WORK_RATE - time.monotonic()))
        proc.stdin.write(body[i : i + step])
        proc.stdin.flush()
    proc.stdin.close()
    proc.wait(timeout=120)
    reader.join(timeout=10)
    out = []
    for p in parts:
        written = t0 + p.end_s  # its last byte was written then
        got = [
            at
            for at, line in arrivals
            if "segment" in line
            and min(line["segment"]["end_s"], p.end_s) - max(line["segment"]["start_s"], p.start_s)
            > 0
        ]
        out.append(min(got) - written if got else None)
    seen = [d for d in out if d is not None]
    return {
        "recording_s": n / WORK_RATE,
        "excerpts": len(parts),
        "segments_printed": len(seen),
        "delay_s": seen,
        "delay_s_p50": float(np.median(seen)) if seen else None,
        "delay_s_max": float(np.max(seen)) if seen else None,
    }


def bench_long(snap: Snapshot, sources, shows, unseen, minutes: float) -> dict:
    """``minutes`` of recordings, one after another, into one Segmenter in 1 s chunks."""
    seg = Segmenter(snap)
    rng = np.random.default_rng(77)
    base = rss_anon_mib()
    samples, held, rss = [], [], []
    parts: list[Part] = []
    at = 0.0
    cpu = 0.0
    next_sample = 60.0
    while at < minutes * 60:
        rec = compose_recording(sources, unseen, sample_rate=WORK_RATE, rng=rng)
        q = resample_poly(rec.samples, 1, 2).astype(np.float32)
        parts += [replace(p, start_s=p.start_s + at, end_s=p.end_s + at) for p in rec.parts]
        t0 = time.process_time()
        for i in range(0, q.size, seg.rate):
            seg.feed(q[i : i + seg.rate])
            if seg.duration_s >= next_sample:
                samples.append(seg.duration_s)
                held.append(seg.held_bytes())
                rss.append(rss_anon_mib() - base)
                next_sample += 60.0
        cpu += time.process_time() - t0
        at += q.size / seg.rate
    t0 = time.process_time()
    seg.finish()
    cpu += time.process_time() - t0
    result = seg.result()
    sc = score(Recording(np.zeros(0), WORK_RATE, tuple(parts)), list(result.segments), shows)
    s = summarise([sc])
    return {
        "audio_s": seg.duration_s,
        "segments": len(result.segments),
        "found": s["found"],
        "unseen_silent": s["unseen_silent"],
        "x_realtime_cpu": seg.duration_s / cpu,
        "held_kib_max": max(held) / 1024,
        "held_kib_first": held[0] / 1024,
        "rss_anon_growth_mib_after_first_minute": rss[0],
        "rss_anon_growth_mib_max": max(rss),
        "rss_anon_growth_mib_end": rss[-1],
        "history_s": DEFAULT_SEGMENT_PARAMS.history_s,
    }


def bench_large(sim: Path, sources, shows, unseen, seeds: int) -> dict:
    """Recordings against the large snapshot: accuracy, and CPU against the windows alone."""
    out: dict = {}
    with Snapshot.open(sim) as snap:
        info = snap.info()
        sp = DEFAULT_SEGMENT_PARAMS
        # The first queries fault the touched pages of the map in.
        _final(snap, make_recording(sources, unseen, "clean", 99)[1][: 30 * 8000])
        cpu_seg = cpu_win = audio_s = 0.0
        for name in ("clean", "noise_10db"):
            scores = []
            for seed in range(seeds):
                rec, q = make_recording(sources, unseen, name, seed)
                t0 = time.process_time()
                segments = _final(snap, q)
                cpu_seg += time.process_time() - t0
                rate = snap.params.sample_rate
                w, h = round(sp.window_s * rate), round(sp.hop_s * rate)
                t0 = time.process_time()
                for a in range(0, max(1, q.size - w + 1), h):
                    match_samples(q[a : a + w], snap)
                cpu_win += time.process_time() - t0
                audio_s += q.size / rate
                scores.append(score(rec, list(segments), shows))
            out[name] = summarise(scores)
            log(f"  {info['hours']:.0f} h, {name}: found {out[name]['found']:.1%}, unseen silent "
                f"{out[name]['unseen_silent']:.1%}")  # fmt: skip
    out["hours"] = info["hours"]
    out["x_realtime_cpu"] = audio_s / cpu_seg
    out["windows_alone_x_realtime_cpu"] = audio_s / cpu_win
    out["cost_vs_windows_alone"] = cpu_seg / cpu_win
    return out


def section(r: dict) -> list[str]:
    a = r["accuracy"]
    lines = [
        SECTION_START,
        "## Long recordings as segments",
        "",
        f"Run {r['date']} on {r['machine']} by `python -m benchmarks.segments` (raw numbers: "
        f"`benchmarks/segments.json`); load average {r['load_start']} at the start, "
        f"{r['load_end']} at the end (time figures move with it).",
        "",
        f"{r['seeds']} generated recordings per degradation, each of 4-8 excerpts of 6-20 s "
        "(15% of them inside a show's shared intro) with 2-10 s of unseen speech over music "
        "between them (15% back to back), from the benchmark corpus; the degradation over the "
        "whole recording. Found = one segment names the episode with both boundaries within "
        "1 s and the offset within 1.5 s; silent = no segment over an unseen stretch farther "
        "than 1 s from its ends; intros = the segment is ambiguous and names exactly the "
        "show's 8 episodes.",
        "",
        "| recording | excerpts | found | start error p50 / p95 | end error p50 / p95 | "
        "offset error p95 | unseen silent | intros ambiguous |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in a["per_degradation"].items():
        mark = "**" if name in TARGETS else ""
        intros = (
            "-"
            if d["intros_ambiguous"] is None
            else f"{d['intros_ambiguous']:.0%} of {d['intros']}"
        )
        lines.append(
            f"| {mark}{name}{mark} | {d['excerpts']} | {mark}{d['found']:.1%}{mark} | "
            f"{d['start_err_p50']:.2f} / {d['start_err_p95']:.2f} s | "
            f"{d['end_err_p50']:.2f} / {d['end_err_p95']:.2f} s | {d['offset_err_p95']:.2f} s | "
            f"{d['unseen_silent']:.1%} of {d['unseen']} | {intros} |"
        )
    t = a["targets"]
    d = a["delay_audio_s"]
    lines += [
        "",
        f"- Clean, noisy (10 dB) and re-encoded (mp3 32 kbit/s) together: **{t['found']:.1%}** "
        f"of {t['excerpts']} excerpts found (target >= 95%), **{t['unseen_silent']:.1%}** of "
        "unseen stretches silent (target >= 99%).",
        f"- Live, fed in {CHUNK_S:g} s chunks: a segment comes back after **{d['p50']:.2f} s** "
        f"of audio past its excerpt's end (p50; p95 {d['p95']:.2f} s, max {d['max']:.2f} s, "
        f"{d['n']} excerpts), plus the step of work that returns it (p99 "
        f"{a['step_ms_p99']:.0f} ms, max {a['step_ms_max']:.0f} ms). Segmenting ran "
        f"{a['x_realtime_cpu']:.0f}x realtime on one core against the corpus.",
    ]
    c = r.get("cli_live")
    if c:
        ds = ", ".join(f"{x:.2f}" for x in c["delay_s"])
        lines.append(
            f"- Through `citywok match DIR - --segments --json`, a {c['recording_s']:.0f} s "
            f"recording written to its standard input at its real pace: each of "
            f"{c['segments_printed']}/{c['excerpts']} segments printed **{c['delay_s_p50']:.2f} "
            f"s** (median; max {c['delay_s_max']:.2f} s) after its excerpt's last byte was "
            f"written ({ds} s; target <= 3 s)."
        )
    lg = r.get("long")
    if lg:
        lines.append(
            f"- Memory over {lg['audio_s'] / 60:.0f} minutes of input into one segmenter: its "
            f"buffers stay at {lg['held_kib_max']:.0f} KiB at most ({lg['history_s']:g} s of "
            f"audio and hits); the process's anonymous memory grew "
            f"{lg['rss_anon_growth_mib_after_first_minute']:.1f} MiB in the first minute and "
            f"{lg['rss_anon_growth_mib_max']:.1f} MiB at most over the whole input "
            f"({lg['segments']} segments; found {lg['found']:.1%}, unseen silent "
            f"{lg['unseen_silent']:.1%}; {lg['x_realtime_cpu']:.0f}x realtime)."
        )
    big = r.get("large")
    if big:
        lines.append(
            f"- Against a {big['hours']:.0f}-hour snapshot (the corpus plus simulated shards), "
            f"clean and noise 10 dB: found {big['clean']['found']:.1%} and "
            f"{big['noise_10db']['found']:.1%}, unseen silent {big['clean']['unseen_silent']:.1%}"
            f" and {big['noise_10db']['unseen_silent']:.1%}; segmenting ran "
            f"**{big['x_realtime_cpu']:.0f}x realtime** on one core, "
            f"{big['cost_vs_windows_alone']:.2f} times the CPU of matching the same windows "
            f"alone ({big['windows_alone_x_realtime_cpu']:.0f}x realtime, the baseline in the "
            "same run): an hour of a live stream takes about "
            f"{3600 / big['x_realtime_cpu']:.0f} s of one core."
        )
    lines.append(SECTION_END)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=6, help="recordings per degradation")
    ap.add_argument("--hours", type=float, default=1000, help="large snapshot (0: skip)")
    ap.add_argument("--large-seeds", type=int, default=3)
    ap.add_argument("--live-seconds", type=float, default=120, help="real-time CLI run (0: skip)")
    ap.add_argument("--long-minutes", type=float, default=60, help="memory run (0: skip)")
    args = ap.parse_args()
    res: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_start": load(),
        "seeds": args.seeds,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE.parent
        ).stdout.strip(),
    }
    snap_dir = corpus_snapshot()
    unseen = render_unseen_samples(duration_s=240.0, seed=99)
    with Snapshot.open(snap_dir) as snap:
        sources, shows = library_sources(snap)
        log("accuracy and delay")
        res["accuracy"] = bench_accuracy(snap, sources, shows, unseen, args.seeds)
        if args.long_minutes:
            log(f"{args.long_minutes:g} minutes into one segmenter")
            res["long"] = bench_long(snap, sources, shows, unseen, args.long_minutes)
    if args.live_seconds:
        log(f"live through the CLI ({args.live_seconds:g} s at real pace)")
        res["cli_live"] = bench_cli_live(snap_dir, sources, unseen, args.live_seconds)
    if args.hours:
        log(f"{args.hours:g}-hour snapshot")
        res["large"] = bench_large(
            large_snapshot(snap_dir, args.hours), sources, shows, unseen, args.large_seeds
        )
    res["load_end"] = load()
    RESULTS_JSON.write_text(json.dumps(res, indent=2) + "\n")
    replace_section(SECTION_START, SECTION_END, section(res))
    log("\n".join(section(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
