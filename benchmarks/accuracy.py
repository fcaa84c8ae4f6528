"""How well clips are matched, and what matching costs at 1,000 hours: the previous matcher's
figures beside this checkout's, from the same run on the same clips.

    nice -n 10 python -m benchmarks.accuracy --lock /tmp/citywok-bench.lock [--previous REF]
        [--new REF] [--seeds 4] [--clips-per-seed 10] [--unseen-per-seed 3] [--hours 1000]
        [--large-clips 40] [--hard-clips 12]

- Corpus: generated TV-like episodes (benchmarks/.data/corpus, :func:`build_corpus`; reused
  while demo/library.py and the settings are unchanged).
- Clips: for every case (each preset of demo/degrade.py: the usual degradations, the changes of
  speed, pitch and tempo, a loudspeaker in a room) and every length (1, 2, 3, 5, 10 s, the
  length of the clip as the matcher gets it: a clip played 1.25x fast is cut 1.25x as long from
  the episode), ``--clips-per-seed`` clips for each of ``--seeds`` seeds, from the unique part of the
  episodes at random offsets. Right = the best match is the episode and the offset (in the
  episode's time) is within 1 s. Audio in no episode (each case and length): no match. Clips
  inside a show's shared intro: ambiguous, naming exactly the show's episodes. The clips are
  made once (benchmarks/.data/clips, keyed by everything they depend on) and given to both
  matchers; matching is deterministic, so a committed side's answers to a clip file are kept
  (benchmarks/.data/answers, keyed by the trees in ``ANSWERS_DEPEND_ON``) for later runs.
- Previous and new: ``--previous REF`` (default: the merge-base with main, or on main the
  commit before the newest change to citywok_pipeline/fingerprint/) is checked out into a
  temporary ``git worktree``; each side indexes the corpus with its own code and matches the
  clips in its own process (benchmarks/match_clips.py with PYTHONPATH at that checkout).
- At ``--hours`` (benchmarks/.data/sim-<H>h, benchmarks/simulate.py, plus the corpus): p50/p95
  of ``match_samples`` per clip length, clean and degraded, and per hard case (speed, pitch,
  tempo, room, unseen audio), the two sides taking turns in rounds so that both see the same
  load; index size per hour, indexing speed with decode, memory, the time to open.

Writes benchmarks/results.json (its ``accuracy`` and ``large`` keys) and the Accuracy and
1,000-hour sections of benchmarks/RESULTS.md (between markers; ``python -m benchmarks.run``
writes the same sections). Record the load (``uptime``) beside time figures; compare ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from citywok_pipeline.demo import degrade as degrade_module
from citywok_pipeline.demo import library as library_module
from citywok_pipeline.demo.degrade import CHANGES, DEGRADATIONS
from citywok_pipeline.demo.library import GeneratedEpisode, generate_library, generate_unseen_audio
from citywok_pipeline.files import file_sha256
from citywok_pipeline.fingerprint import DEFAULT_PARAMS
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.indexer import index_library

from .report import machine, replace_section

HERE = Path(__file__).parent
REPO = HERE.parent
DATA = HERE / ".data"
WORKER = HERE / "match_clips.py"
RESULTS_JSON = HERE / "results.json"
WORK_RATE = 16_000  # degradations run here, then the clip goes to the core's rate
LENGTHS = (1.0, 2.0, 3.0, 5.0, 10.0)
ROOM = "loudspeaker_room"
# The issue's usual degradations (noise 10 dB, mp3 32k, phone band, reverb, gain) and clean;
# noise 0 dB is measured beside them.
USUAL = ("clean", "noise_10db", "mp3_32k", "telephone", "reverb", "gain_-18db")
# What was measured before the changes of speed, pitch and tempo: it must stay >= 99% at 3-10 s.
BEFORE = (*USUAL[:3], "noise_0db", *USUAL[3:], "speed_+1pct")
OFFSET_TOLERANCE_S = 1.0
INTRO_LENGTHS = (3.0, 5.0)
# Timed at the large snapshot beside clean and degraded clips ("unseen": audio in no episode).
HARD = (*(c for c in CHANGES if c != "speed_+1pct"), ROOM, "unseen")
HARD_LENGTHS = (2.0, 5.0, 10.0)
# What a side's answers to a clip file depend on: the same trees, the same answers.
ANSWERS_DEPEND_ON = (
    "citywok_pipeline/fingerprint",
    "citywok_pipeline/snapshot",
    "citywok_pipeline/indexer.py",
    "citywok_pipeline/library.py",
)
SECTION_ACCURACY = ("<!-- accuracy -->", "<!-- /accuracy -->")
SECTION_LARGE = ("<!-- large -->", "<!-- /large -->")
LEGACY_HEADINGS = {SECTION_ACCURACY[0]: "## Accuracy (c)", SECTION_LARGE[0]: "## A 1001-hour"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ----------------------------------------------------------------------------------------------
# The corpus


@dataclass
class Corpus:
    root: Path
    snapshot: Path
    episodes: list[GeneratedEpisode]
    index_report: object


def _file_digest(*modules) -> str:
    return _file_digest_path(*(Path(m.__file__) for m in modules))


def _file_digest_path(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_corpus(
    work: Path,
    *,
    shows: int = 3,
    seasons: int = 2,
    episodes: int = 4,
    duration_s: float = 120.0,
    intro_s: float = 10.0,
    seed: int = 7,
) -> Corpus:
    """The generated library under ``work/media`` and its snapshot under ``work/snapshot``.

    The media are generated again only when the settings or demo/library.py changed since
    the last build (a seed renders the same samples); the snapshot is brought up to date by
    ``index_library``, which reuses what did not change."""
    root, snap = work / "media", work / "snapshot"
    settings = {
        "shows": shows, "seasons": seasons, "episodes": episodes, "duration_s": duration_s,
        "intro_s": intro_s, "seed": seed, "library_py": _file_digest(library_module),
    }  # fmt: skip
    manifest = work / "corpus.json"
    eps = None
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved["settings"] == settings and all(
            Path(e["path"]).exists() for e in saved["episodes"]
        ):
            eps = [GeneratedEpisode(**{**e, "path": Path(e["path"])}) for e in saved["episodes"]]
    if eps is None:
        shutil.rmtree(root, ignore_errors=True)
        eps = generate_library(
            root,
            shows=shows,
            seasons=seasons,
            episodes=episodes,
            duration_s=duration_s,
            intro_s=intro_s,
            seed=seed,
            formats=("mp3", "mkv", "m4a", "flac", "opus", "wav"),
            progress=True,
        )
        records = [{**e.__dict__, "path": str(e.path)} for e in eps]
        # What the clips depend on: the files' bytes (a change to library.py that renders the
        # same audio leaves the clips valid).
        content = hashlib.sha256()
        for e in sorted(eps, key=lambda e: str(e.path)):
            content.update(f"{e.path.relative_to(root)} {file_sha256(e.path)}\n".encode())
        manifest.write_text(
            json.dumps({"settings": settings, "content": content.hexdigest(), "episodes": records})
            + "\n"
        )
    report = index_library(root, snap)
    return Corpus(root, snap, eps, report)


# ----------------------------------------------------------------------------------------------
# Clips


def time_factor(case: str) -> float:
    """How many times faster than its source a clip of ``case`` plays."""
    s, _, t = CHANGES.get(case, (1.0, 0.0, 1.0))
    return s * t


def _rng(*parts: object) -> np.random.Generator:
    """A generator for one cell, the same whatever other cells are drawn."""
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


class Clips:
    """Clips and what each should be answered, written to one file a worker can read."""

    def __init__(self) -> None:
        self.samples: list[np.ndarray] = []
        self.truth: list[dict] = []

    def add(self, x: np.ndarray, core_rate: int, **truth) -> None:
        q = resample_poly(x, core_rate, WORK_RATE).astype(np.float32)
        self.samples.append(q)
        self.truth.append(truth)

    def save(self, path: Path, core_rate: int) -> None:
        ends = np.cumsum([len(s) for s in self.samples])
        bounds = np.stack([ends - [len(s) for s in self.samples], ends], axis=1)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            samples=np.concatenate(self.samples),
            bounds=bounds.astype(np.int64),
            sample_rate=core_rate,
        )
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(self.truth) + "\n")


def _excerpt(x: np.ndarray, start_s: float, length_s: float) -> np.ndarray:
    return x[int(start_s * WORK_RATE) : int((start_s + length_s) * WORK_RATE)]


class ClipMaker:
    """Draws clips of the corpus (and of audio in no episode) for the clip files."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.episodes = corpus.episodes
        self.audio = {e.path: decode(e.path, sample_rate=WORK_RATE) for e in self.episodes}
        self.source = {e.path: e.path.relative_to(corpus.root).as_posix() for e in self.episodes}
        self.show_sources: dict[str, list[str]] = {}
        for e in self.episodes:
            self.show_sources.setdefault(e.show, []).append(self.source[e.path])
        self._unseen: dict[int, np.ndarray] = {}
        self.core_rate = DEFAULT_PARAMS.sample_rate

    def unseen(self, seed: int) -> np.ndarray:
        if seed not in self._unseen:
            path = DATA / "clips" / f"unseen-{seed}.wav"
            if not path.exists():
                generate_unseen_audio(path, duration_s=240.0, seed=seed + 99)
            self._unseen[seed] = decode(path, sample_rate=WORK_RATE)
        return self._unseen[seed]

    def seen(self, clips: Clips, case: str, length: float, rng, *, after_s: float = 0.5) -> None:
        e = self.episodes[rng.integers(len(self.episodes))]
        src_len = length * time_factor(case)
        start = float(rng.uniform(e.intro_s + after_s, e.duration_s - src_len - 0.5))
        x = DEGRADATIONS[case](_excerpt(self.audio[e.path], start, src_len), WORK_RATE, rng)
        clips.add(
            x, self.core_rate, kind="seen", case=case, length=length,
            source=self.source[e.path], start_s=start,
        )  # fmt: skip

    def not_seen(self, clips: Clips, case: str, length: float, rng, seed: int) -> None:
        u = self.unseen(seed)
        src_len = length * time_factor(case)
        start = float(rng.uniform(0, u.size / WORK_RATE - src_len))
        x = DEGRADATIONS[case](_excerpt(u, start, src_len), WORK_RATE, rng)
        clips.add(x, self.core_rate, kind="unseen", case=case, length=length)

    def intro(self, clips: Clips, e: GeneratedEpisode, length: float, rng) -> None:
        start = float(rng.uniform(0, e.intro_s - length))
        clips.add(
            _excerpt(self.audio[e.path], start, length), self.core_rate, kind="intro",
            case="clean", length=length, named=sorted(self.show_sources[e.show]),
        )  # fmt: skip


def _clips_key(**settings) -> str:
    settings["degrade_py"] = _file_digest(degrade_module)
    settings["corpus"] = json.loads((DATA / "corpus" / "corpus.json").read_text())["content"]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def accuracy_clips(
    maker: ClipMaker, seed: int, *, cases, lengths, per_cell: int, unseen_per_cell: int
) -> Path:
    """One seed's clip file: ``per_cell`` clips per (case, length), ``unseen_per_cell`` of audio
    in no episode, and the intro clips; made once."""
    key = _clips_key(
        kind="accuracy", seed=seed, cases=list(cases), lengths=list(lengths), per_cell=per_cell,
        unseen=unseen_per_cell, intro=list(INTRO_LENGTHS),
    )  # fmt: skip
    path = DATA / "clips" / f"accuracy-{seed}-{key}.npz"
    if path.exists():
        return path
    log(f"  making the clips of seed {seed}")
    clips = Clips()
    for case in cases:
        for length in lengths:
            rng = _rng("seen", seed, case, length)
            for _ in range(per_cell):
                maker.seen(clips, case, length, rng)
            rng = _rng("unseen", seed, case, length)
            for _ in range(unseen_per_cell):
                maker.not_seen(clips, case, length, rng, seed)
    for e in maker.episodes[seed % 2 :: 2]:
        for length in INTRO_LENGTHS:
            maker.intro(clips, e, length, _rng("intro", seed, e.path.name, length))
    clips.save(path, maker.core_rate)
    return path


def large_clips(
    maker: ClipMaker, *, rounds: int, lengths, per_length: int, hard_cases, hard_lengths,
    hard_per_cell: int,
) -> list[Path]:  # fmt: skip
    """The clips timed at the large snapshot, in ``rounds`` files: per length, clean and
    degraded (the usual degradations and noise 0 dB in turn); per hard case and length
    (``unseen`` is audio in no episode)."""
    degraded = [c for c in BEFORE if c not in ("clean", "speed_+1pct")]
    key = _clips_key(
        kind="large", rounds=rounds, lengths=list(lengths), per_length=per_length,
        hard=list(hard_cases), hard_lengths=list(hard_lengths), hard_per_cell=hard_per_cell,
    )  # fmt: skip
    paths = [DATA / "clips" / f"large-{r}-{key}.npz" for r in range(rounds)]
    if all(p.exists() for p in paths):
        return paths
    log("  making the clips for the large snapshot")
    sets = [Clips() for _ in range(rounds)]
    i = 0
    for length in lengths:
        for group in ("clean", "degraded"):
            rng = _rng("large", group, length)
            for k in range(per_length):
                case = "clean" if group == "clean" else degraded[k % len(degraded)]
                maker.seen(sets[i % rounds], case, length, rng, after_s=1.0)
                sets[i % rounds].truth[-1]["group"] = group
                i += 1
    for case in hard_cases:
        for length in hard_lengths:
            rng = _rng("large-hard", case, length)
            for _ in range(hard_per_cell):
                c = sets[i % rounds]
                if case == "unseen":
                    maker.not_seen(c, "clean", length, rng, seed=1000)
                else:
                    maker.seen(c, case, length, rng, after_s=1.0)
                c.truth[-1]["group"] = case
                i += 1
    for r, c in enumerate(sets):
        c.save(paths[r], maker.core_rate)
    return paths


# ----------------------------------------------------------------------------------------------
# The two sides


@dataclass
class Side:
    name: str  # "previous" or "new"
    root: Path  # the checkout whose package is measured
    commit: str
    work: Path  # its snapshots and answers
    signature: str = ""  # what its shards depend on (match_clips.py)
    code: str = ""  # the trees its answers depend on, when committed (ANSWERS_DEPEND_ON)

    def kept_answers(self, clips: Path) -> Path | None:
        """Where this side's answers to ``clips`` are kept (None: its package has changes that
        are not committed)."""
        if not self.code:
            return None
        worker = _file_digest_path(WORKER)
        return DATA / "answers" / f"{self.code[:12]}-{worker[:8]}-{clips.stem}.json"

    def env(self) -> dict[str, str]:
        # The checkout first on the path, and the shared venv's editable install of the main
        # checkout taken out of the finders (as benchmarks.serve does for --previous).
        shim = DATA / "previous-shim"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "sitecustomize.py").write_text(
            "import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        )
        return {**os.environ, "PYTHONPATH": f"{self.root}{os.pathsep}{shim}"}

    def start(self, *args: object) -> subprocess.Popen:
        cmd = [sys.executable, str(WORKER), *map(str, args)]
        return subprocess.Popen(cmd, env=self.env(), stdout=subprocess.PIPE, text=True)

    @staticmethod
    def result(proc: subprocess.Popen) -> dict:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])

    def run(self, *args: object) -> dict:
        return self.result(self.start(*args))


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def default_previous() -> str:
    """The merge-base with main; on main itself, the commit before the newest change to the
    matcher's package."""
    head = _git("rev-parse", "HEAD")
    base = _git("merge-base", "HEAD", "main")
    if base != head:
        return base
    return _git(
        "rev-parse", _git("log", "-1", "--format=%H", "--", "citywok_pipeline/fingerprint") + "^"
    )


def previous_checkout(ref: str, into: Path) -> tuple[Path, str]:
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    _git("worktree", "add", "--detach", str(into), commit)
    return into, commit


# ----------------------------------------------------------------------------------------------
# Scoring


def _right(rec: dict, t: dict) -> bool:
    return (
        rec["source"] == t["source"] and abs(rec["offset_s"] - t["start_s"]) <= OFFSET_TOLERANCE_S
    )


def _pct(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) if v else float("nan")


def score_accuracy(per_seed: list[tuple[list[dict], list[dict]]]) -> dict:
    """Right answers per (case, length) cell, per seed and pooled; unseen clips left without a
    match; intro clips answered ambiguous with the show's episodes; calibration."""
    cells: dict[str, dict] = {}
    unseen: dict[str, list[bool]] = {}
    intro: list[bool] = []
    answers: list[tuple[float, bool]] = []
    change_reported: dict[str, list[tuple[float, float, float]]] = {}
    latencies: list[float] = []
    for seed_index, (truth, recs) in enumerate(per_seed):
        for t, r in zip(truth, recs, strict=True):
            latencies.append(r["ms"])
            if t["kind"] == "seen":
                cell = cells.setdefault(
                    f"{t['case']}/{t['length']:g}s",
                    {"case": t["case"], "length": t["length"], "right": 0, "wrong": 0,
                     "clips": 0, "per_seed": {}, "ms": []},
                )  # fmt: skip
                ok = r["source"] is not None and _right(r, t)
                cell["clips"] += 1
                cell["right"] += ok
                cell["wrong"] += r["source"] is not None and not ok
                cell["ms"].append(r["ms"])
                s = cell["per_seed"].setdefault(str(seed_index), [0, 0])
                s[0] += ok
                s[1] += 1
                if r["source"] is not None:
                    answers.append((r["confidence"], ok))
                if ok and t["case"] in CHANGES and t["length"] >= 3:
                    change_reported.setdefault(t["case"], []).append(
                        (r["speed"], r["pitch"], r["tempo"])
                    )
            elif t["kind"] == "unseen":
                unseen.setdefault(f"{t['length']:g}s", []).append(r["source"] is None)
                if r["source"] is not None:
                    answers.append((r["confidence"], False))
            else:
                intro.append(r["ambiguous"] and r["named"] == t["named"])
    for cell in cells.values():
        cell["rate"] = cell["right"] / cell["clips"]
        cell["ms_p50"] = _pct(cell.pop("ms"), 50)
        cell["per_seed"] = [ok / n for ok, n in cell["per_seed"].values()]
    bands = [(0.5, 0.9), (0.9, 0.99), (0.99, 1.01)]
    calibration = []
    for lo, hi in bands:
        sel = [ok for c, ok in answers if lo <= c < hi]
        calibration.append(
            {
                "band": f"[{lo}, {min(hi, 1.0)}]",
                "answers": len(sel),
                "right": float(np.mean(sel)) if sel else None,
            }
        )
    all_unseen = [x for v in unseen.values() for x in v]
    return {
        "cells": cells,
        "clips": sum(c["clips"] for c in cells.values()),
        "unseen_no_match": float(np.mean(all_unseen)) if all_unseen else None,
        "unseen_clips": len(all_unseen),
        "unseen_no_match_by_length": {k: float(np.mean(v)) for k, v in unseen.items()},
        "intro_ambiguous": float(np.mean(intro)) if intro else None,
        "intro_clips": len(intro),
        "calibration": calibration,
        "change_reported_median": {
            k: [float(np.median([x[i] for x in v])) for i in range(3)]
            for k, v in change_reported.items()
        },
        "latency_ms_p50": _pct(latencies, 50),
    }


def group_rate(acc: dict, cases, lengths) -> tuple[float, int, str]:
    """Pooled rate over the cells of ``cases`` x ``lengths``, the clip count, and the worst
    cell."""
    sel = [c for c in acc["cells"].values() if c["case"] in cases and c["length"] in lengths]
    if not sel:
        return float("nan"), 0, "-"
    right, n = sum(c["right"] for c in sel), sum(c["clips"] for c in sel)
    worst = min(sel, key=lambda c: c["rate"])
    return right / n, n, f"{worst['case']} {worst['length']:g} s {worst['rate']:.0%}"


def score_large(truth: list[dict], recs: list[dict]) -> dict:
    """p50/p95 of the match time and the share right per (group, length); unseen right means
    no match."""
    out: dict[str, dict] = {}
    for t, r in zip(truth, recs, strict=True):
        g = out.setdefault(
            f"{t['group']}/{t['length']:g}s",
            {"group": t["group"], "length": t["length"], "ms": [], "cpu_ms": [], "right": 0,
             "passes": []},
        )  # fmt: skip
        g["ms"].append(r["ms"])
        g["cpu_ms"].append(r["cpu_ms"])
        g["passes"].append(r["passes"])
        g["right"] += (
            (r["source"] is None)
            if t["kind"] == "unseen"
            else (r["source"] is not None and _right(r, t))
        )
    for g in out.values():
        ms, cpu = g.pop("ms"), g.pop("cpu_ms")
        g["clips"] = len(ms)
        g["right"] /= len(ms)
        g["p50_ms"], g["p95_ms"] = _pct(ms, 50), _pct(ms, 95)
        g["cpu_p50_ms"], g["cpu_p95_ms"] = _pct(cpu, 50), _pct(cpu, 95)
        g["passes_mean"] = float(np.mean(g.pop("passes")))
    return out


# ----------------------------------------------------------------------------------------------
# The run


def _link_large(side: Side, sim: Path) -> Path:
    """The simulated shards (linked) and the side's corpus shards (copied) in one directory."""
    out = side.work / "large"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for p in sorted(sim.iterdir()):
        if p.name.startswith("sim-"):
            (out / p.name).symlink_to(p.resolve())
    for p in sorted((side.work / "snapshot").iterdir()):
        if p.is_file() and not p.name.startswith("."):
            shutil.copy2(p, out / p.name)
    return out


def prepare(
    corpus: Corpus, *, seeds: int, clips_per_seed: int, unseen_per_seed: int, hours: float,
    large_clips_per_length: int, hard_clips: int, rounds: int,
) -> tuple[ClipMaker, list[Path], list[Path]]:  # fmt: skip
    """Every clip file a run needs (made once, kept in benchmarks/.data/clips)."""
    maker = ClipMaker(corpus)
    acc = [
        accuracy_clips(
            maker,
            seed,
            cases=list(DEGRADATIONS),
            lengths=LENGTHS,
            per_cell=clips_per_seed,
            unseen_per_cell=unseen_per_seed,
        )
        for seed in range(seeds)
    ]
    large = (
        large_clips(
            maker,
            rounds=rounds,
            lengths=LENGTHS,
            per_length=large_clips_per_length,
            hard_cases=HARD,
            hard_lengths=HARD_LENGTHS,
            hard_per_cell=hard_clips,
        )
        if hours
        else []
    )
    return maker, acc, large


def measure(
    *,
    previous: str | None,
    new: str | None = None,
    seeds: int,
    clips_per_seed: int,
    unseen_per_seed: int,
    hours: float,
    large_clips_per_length: int,
    hard_clips: int,
    rounds: int = 4,
    lock: Path | None = None,
) -> dict:
    """Both sides on the same clips: accuracy on the corpus and, with ``hours``, the large
    snapshot. Returns the ``accuracy`` and ``large`` parts of results.json."""
    started = {
        "load": loadavg(),
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nice": os.nice(0),
    }
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "clips").mkdir(exist_ok=True)
    log("the corpus")
    corpus = build_corpus(DATA / "corpus")
    ref = previous or default_previous()
    checkouts = []
    try:
        prev_root, prev_commit = previous_checkout(ref, checkout_dir("previous", checkouts))
        if new:
            new_root, new_commit = previous_checkout(new, checkout_dir("new", checkouts))
            dirty = False
        else:
            new_root, new_commit = REPO, _git("rev-parse", "HEAD")
            dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        sides = [
            Side("previous", prev_root, prev_commit, DATA / "compare" / "previous"),
            Side("new", new_root, new_commit, DATA / "compare" / "new"),
        ]
        for s in sides:
            changed = s.root == REPO and _git("status", "--porcelain", "--", *ANSWERS_DEPEND_ON)
            trees = [_git("rev-parse", f"{s.commit}:{p}") for p in ANSWERS_DEPEND_ON]
            s.code = "" if changed else hashlib.sha256(" ".join(trees).encode()).hexdigest()
        log(f"previous {prev_commit[:10]} ({ref}), new {sides[1].commit[:10]}"
            + (" with uncommitted changes" if dirty else ""))  # fmt: skip
        built = {}
        for s in sides:
            shutil.rmtree(s.work, ignore_errors=True)
            s.work.mkdir(parents=True)
            log(f"{s.name}: indexing the corpus")
            built[s.name] = s.run("index", corpus.root, s.work / "snapshot")
            s.signature = built[s.name]["signature"]
        per_seed, unseen_seed = clips_per_seed, unseen_per_seed
        _, acc_paths, large_paths = prepare(
            corpus, seeds=seeds, clips_per_seed=per_seed, unseen_per_seed=unseen_seed,
            hours=hours, large_clips_per_length=large_clips_per_length, hard_clips=hard_clips,
            rounds=rounds,
        )  # fmt: skip
        answers: dict[str, list] = {s.name: [] for s in sides}
        for seed, path in enumerate(acc_paths):
            truth = json.loads(path.with_suffix(".json").read_text())
            log(f"seed {seed}: {len(truth)} clips through both matchers (load {loadavg()})")
            # The two sides at once, one core each: accuracy does not depend on the time taken.
            # Matching is deterministic, so a committed side's answers to the same clip file
            # are kept and read again by a later run.
            procs = []
            for s in sides:
                kept = s.kept_answers(path)
                if kept and kept.exists():
                    log(f"  {s.name}: its answers to these clips, kept from an earlier run")
                    procs.append((s, None, kept))
                    continue
                out = s.work / f"acc-{seed}.json"
                procs.append((s, s.start("match", s.work / "snapshot", path, out), out))
            for s, p, out in procs:
                if p is not None:
                    Side.result(p)
                    kept = s.kept_answers(path)
                    if kept:
                        kept.parent.mkdir(exist_ok=True)
                        shutil.copy2(out, kept)
                answers[s.name].append((truth, json.loads(out.read_text())))
        accuracy = {
            "run": {**started, "machine": machine()},
            "commits": {s.name: s.commit for s in sides},
            "previous_ref": ref,
            "new_ref": new or "this checkout",
            "uncommitted_changes": dirty,
            "seeds": seeds,
            "clips_per_cell": per_seed * seeds,
            "unseen_per_cell": unseen_seed * seeds,
            "corpus": {
                s.name: {k: built[s.name][k] for k in ("episodes", "hours", "bytes_per_hour")}
                for s in sides
            },
            **{s.name: score_accuracy(answers[s.name]) for s in sides},
        }
        accuracy["run"]["load_at_end"] = loadavg()
        large = None
        if hours:
            with _held(lock):
                large = measure_large(sides, corpus, large_paths, hours=hours)
            large["run"]["machine"] = machine()
            large["run"]["lock"] = str(lock) if lock else None
        if large:
            large["run"]["load_at_end"] = loadavg()
        return {"accuracy": accuracy, "large": large}
    finally:
        for d in checkouts:
            subprocess.run(["git", "worktree", "remove", "--force", str(d)], cwd=REPO, check=False)


def checkout_dir(name: str, made: list[Path]) -> Path:
    """A new path under benchmarks/.data for a temporary ``git worktree`` (added to ``made``,
    which the caller removes)."""
    DATA.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=DATA))
    d.rmdir()  # git worktree add makes it
    made.append(d)
    return d


@contextlib.contextmanager
def _held(lock: Path | None):
    """The benchmarks' lock held (``flock``), when one is named."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        log(f"waiting for {lock}")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def measure_large(sides: list[Side], corpus: Corpus, paths: list[Path], *, hours: float) -> dict:
    started = {"load": loadavg(), "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    signatures = {s.name: s.signature for s in sides}
    sims: dict[str, Path] = {}
    sim_info: dict[str, dict] = {}
    for s in sides:
        # One simulated library serves every side that writes the same shards; another format
        # gets its own, made by that side's simulate.py.
        shared = signatures[s.name] == signatures["new"]
        sim = DATA / f"sim-{int(hours)}h" if shared else s.work / f"sim-{int(hours)}h"
        if sim not in sims.values():
            log(f"{s.name}: the {hours:.0f}-hour simulated shards ({sim})")
            sim_info[str(sim)] = s.run("simulate", s.work / "snapshot", sim, "--hours", hours)
        sims[s.name] = sim
    dirs = {s.name: _link_large(s, sims[s.name]) for s in sides}
    truth: list[dict] = []
    recs: dict[str, list[dict]] = {s.name: [] for s in sides}
    runs: dict[str, list[dict]] = {s.name: [] for s in sides}
    for r, path in enumerate(paths):
        truth += json.loads(path.with_suffix(".json").read_text())
        # Taking turns, first one side then the other, so that both see the same load.
        for s in sides if r % 2 == 0 else sides[::-1]:
            log(f"round {r + 1}/{len(paths)}: {s.name} at {hours:.0f} h (load {loadavg()})")
            out = s.work / f"large-{r}.json"
            runs[s.name].append(s.run("match", dirs[s.name], path, out, "--warmup", 5))
            runs[s.name][-1]["load"] = loadavg()
            recs[s.name] += json.loads(out.read_text())
    indexing: dict[str, list[dict]] = {s.name: [] for s in sides}
    for s in sides:
        log(f"{s.name}: indexing speed (load {loadavg()})")
        indexing[s.name].append(s.run("indexing", corpus.root))
    out: dict = {"hours": hours, "rounds": len(paths), "run": started}
    for s in sides:
        files = [p for p in dirs[s.name].iterdir() if p.name.startswith("sim-")]
        sim_bytes = sum(p.stat().st_size for p in files)
        first = runs[s.name][0]
        out[s.name] = {
            "signature": signatures[s.name],
            "hours": first["hours"],
            "shards": first["shards"],
            "sim_hours": sim_info.get(str(sims[s.name]), {}).get("hours"),
            "sim_bytes": sim_bytes,
            "sim_bytes_per_hour": sim_bytes / (len(files) * 10.0),
            "sim_built_s": sim_info.get(str(sims[s.name]), {}).get("build_s"),
            "hashes_per_second": sim_info.get(str(sims[s.name]), {}).get("hashes_per_second"),
            "open_ms": [x["open_ms"] for x in runs[s.name]],
            "load_per_round": [x["load"] for x in runs[s.name]],
            "rss_mib_before_queries": first["rss_mib_before_queries"],
            "rss_mib_after_queries": first["rss_mib_after_queries"],
            "stacked_bitmaps_mib": first["stacked_bitmaps_mib"],
            "indexing": indexing[s.name],
            "groups": score_large(truth, recs[s.name]),
        }
    return out


# ----------------------------------------------------------------------------------------------
# RESULTS.md


def _pp(prev: float | None, new: float | None, fmt: str = ".0%") -> str:
    def f(v):
        return "-" if v is None or v != v else format(v, fmt)

    return f(new) if prev == new else f"{f(prev)} → {f(new)}"


def accuracy_section(a: dict | None) -> list[str]:
    start, end = SECTION_ACCURACY
    if not a or "new" not in a or "cells" not in a["new"]:
        return [start, "## Accuracy (c)", "", "Not measured yet in this form: run "
                "`python -m benchmarks.accuracy`.", end]  # fmt: skip
    p, n = a["previous"], a["new"]
    run = a["run"]
    same = a["commits"]["previous"] == a["commits"]["new"]
    lines = [
        start,
        "## Accuracy (c)",
        "",
        f"Run {run['at']} on {run['machine']} by `"
        + (f"nice -n {run['nice']} " if run.get("nice") else "")
        + "python -m benchmarks.accuracy "
        f"--previous {a['previous_ref']}{_sizes(a)}` (load average {run['load']} at the start, "
        f"{run.get('load_at_end', '?')} at the end: other work shared the 2 cores). Previous "
        f"matcher: commit {a['commits']['previous'][:10]} (`--previous {a['previous_ref']}`), "
        f"new: {a['commits']['new'][:10]}"
        + (" (uncommitted changes included)" if a.get("uncommitted_changes") else "")
        + (": the same code, a check of the harness." if same else ".")
        + " Each side indexed the corpus with its own code and matched the same clips in its own "
        "process (`benchmarks/match_clips.py` in a temporary `git worktree` of the previous "
        "commit); a figure is `previous → new`, or one figure where they agree.",
        "",
        f"Generated TV-like corpus: {a['corpus']['new']['episodes']} episodes "
        f"({a['corpus']['new']['hours']:.2f} h; 3 shows x 2 seasons x 4 episodes of 120 s, "
        "dialogue by espeak-ng over synthesised music, a 10 s intro shared by every episode of a "
        "show; mp3, mkv, m4a, flac, opus and wav files). Clips from the unique part of episodes "
        f"at random offsets, {a['clips_per_cell']} per cell over {a['seeds']} seeds "
        f"({n['clips']} clips); a clip's length is what the matcher gets (a 1.25x clip is cut "
        "1.25x as long from the episode). Right = the best match is the episode and the offset, "
        "in the episode's time, is within 1 s. Cases: the presets of `demo/degrade.py` "
        "(speed resampled: pitch follows; pitch by ffmpeg's rubberband at the same tempo; tempo "
        "by atempo at the same pitch; `loudspeaker_room`: 150-7000 Hz, a made-up room impulse "
        "response of RT60 0.3-0.8 s, room noise at 10-15 dB SNR).",
        "",
        "| case | " + " | ".join(f"{x:g} s" for x in LENGTHS) + " | wrong answers |",
        "| --- | " + " | ".join("---" for _ in LENGTHS) + " | --- |",
    ]
    for case in DEGRADATIONS:
        row = []
        wrong_p = wrong_n = clips = 0
        for length in LENGTHS:
            k = f"{case}/{length:g}s"
            if k not in n["cells"]:
                row.append("-")
                continue
            cp, cn = p["cells"].get(k), n["cells"][k]
            row.append(_pp(cp["rate"] if cp else None, cn["rate"]))
            wrong_p += cp["wrong"] if cp else 0
            wrong_n += cn["wrong"]
            clips += cn["clips"]
        lines.append(
            f"| {case} | " + " | ".join(row) + f" | {_pp(wrong_p, wrong_n, 'd')} of {clips} |"
        )
    lines += [
        "",
        "Against the issue's targets (pooled over the cells; the worst cell beside):",
        "",
        "| target | previous | new | met (new) |",
        "| --- | --- | --- | --- |",
    ]
    changes = [c for c in CHANGES if c != "speed_+1pct"]
    rows = [
        ("speed ±2-4.17%, pitch ±1 st, tempo 0.8x/1.25x, 3-10 s: >= 95%", changes,
         (3.0, 5.0, 10.0), 0.95),
        ("the same at 2 s: >= 90%", changes, (2.0,), 0.90),
        ("2 s, usual degradations (clean, noise 10 dB, mp3 32k, phone, reverb, gain): >= 97%",
         USUAL, (2.0,), 0.97),
        ("1 s, the same degradations: >= 80%", USUAL, (1.0,), 0.80),
        ("loudspeaker in a room, 5 s: >= 97%", (ROOM,), (5.0,), 0.97),
        ("loudspeaker in a room, 3 s: >= 90%", (ROOM,), (3.0,), 0.90),
        ("what was measured before (8 cases), 3-10 s: >= 99%", BEFORE, (3.0, 5.0, 10.0), 0.99),
    ]  # fmt: skip
    for label, cases, lengths, target in rows:
        rp, _, wp = group_rate(p, cases, lengths)
        rn, cn, wn = group_rate(n, cases, lengths)
        lines.append(
            f"| {label} | {rp:.1%} (worst: {wp}) | **{rn:.1%}** (worst: {wn}; {cn} clips) "
            f"| {'yes' if rn >= target else 'no'} |"
        )
    un_p, un_n = p["unseen_no_match"], n["unseen_no_match"]
    lines.append(
        f"| audio in no episode answered with no match: >= 99.9% | {un_p:.2%} | **{un_n:.2%}** "
        f"({n['unseen_clips']} clips) | {'yes' if un_n >= 0.999 else 'no'} |"
    )
    ip, i_n = p["intro_ambiguous"], n["intro_ambiguous"]
    lines.append(
        f"| intro clips ambiguous naming exactly the show's episodes: every one | {ip:.0%} | "
        f"**{i_n:.0%}** ({n['intro_clips']} clips) | {'yes' if i_n == 1.0 else 'no'} |"
    )
    by_len = n["unseen_no_match_by_length"]
    lines += [
        "",
        f"- Audio in no episode (unseen speech over music, every case and length, "
        f"{a['unseen_per_cell']} per cell): by length "
        + ", ".join(
            f"{k} {_pp(p['unseen_no_match_by_length'].get(k), v, '.1%')}" for k, v in by_len.items()
        )
        + ".",
        "- Intro clips (3 and 5 s, clean, inside a show's shared 10 s intro): "
        f"{_pp(ip, i_n)} answered `ambiguous: true` naming exactly that show's episodes.",
        "- The change the new matcher reports on right answers (median speed, pitch in "
        "semitones, tempo; 3-10 s): "
        + "; ".join(
            f"{k} {v[0]:.3g} / {v[1]:+.2g} / {v[2]:.3g}"
            for k, v in n["change_reported_median"].items()
        )
        + ".",
        "- Spread over the seeds (each seed's own clips): "
        + "; ".join(
            f"{label.split(':')[0]} {_seed_range(n, cases, lengths)}"
            for label, cases, lengths, _ in rows[:6]
        )
        + ".",
        f"- Time per clip on this small corpus (all cases, p50): {_pp(p['latency_ms_p50'], n['latency_ms_p50'], '.1f')} ms; "
        "the large snapshot below is where time is measured.",
        "- Calibration of `confidence` (every answer given, right or wrong):",
        "",
        "| confidence | answers | right |",
        "| --- | --- | --- |",
    ]
    for cp_, cn_ in zip(p["calibration"], n["calibration"], strict=True):
        lines.append(
            f"| {cn_['band']} | {_pp(cp_['answers'], cn_['answers'], 'd')} | "
            f"{_pp(cp_['right'], cn_['right'], '.1%')} |"
        )
    return [*lines, end]


def _sizes(a: dict) -> str:
    """The run's sizes as options, where they are not the defaults."""
    seeds = a.get("seeds", 4)
    per, unseen = a.get("clips_per_cell", 40) // seeds, a.get("unseen_per_cell", 12) // seeds
    out = [f"--seeds {seeds}"] if seeds != 4 else []
    out += [f"--clips-per-seed {per}"] if per != 10 else []
    out += [f"--unseen-per-seed {unseen}"] if unseen != 3 else []
    return "".join(f" {o}" for o in out)


def _seed_range(acc: dict, cases, lengths) -> str:
    per = [
        c["per_seed"]
        for c in acc["cells"].values()
        if c["case"] in cases and c["length"] in lengths
    ]
    if not per:
        return "-"
    by_seed = np.mean(np.array(per), axis=0)
    return f"{by_seed.min():.0%}-{by_seed.max():.0%}"


def large_section(lg: dict | None, corpus_bytes: dict | None = None) -> list[str]:
    start, end = SECTION_LARGE
    if not lg or "new" not in lg or "groups" not in lg["new"]:
        return [start, "## A 1,000-hour snapshot (b, d, e)", "", "Not measured yet in this "
                "form: run `python -m benchmarks.accuracy`.", end]  # fmt: skip
    p, n = lg["previous"], lg["new"]
    run = lg["run"]
    gp, gn = p["groups"], n["groups"]

    def cell(group: str, length: float, *, right: bool = True) -> str:
        k = f"{group}/{length:g}s"
        if k not in gn:
            return "-"
        a, b = gp.get(k), gn[k]
        txt = f"{_ms(a)} → **{_ms(b)}**" if a else f"**{_ms(b)}**"
        if a and a["cpu_p50_ms"]:
            txt += f" (x{b['cpu_p50_ms'] / a['cpu_p50_ms']:.2f})"
        if right:
            txt += f", right {_pp(a['right'] if a else None, b['right'])}"
        return txt

    def ix(side: dict) -> float:
        return max(x["index_x_per_core"] for x in side["indexing"])

    c10, c5 = gn.get("clean/10s"), gn.get("clean/5s")
    p10, p5 = gp.get("clean/10s"), gp.get("clean/5s")
    lines = [
        start,
        f"## A {n['hours']:.0f}-hour snapshot (b, d, e)",
        "",
        f"Run {run['at']} on {run['machine']} by `python -m benchmarks.accuracy`, "
        + (
            f"holding {run['lock']} "
            if run.get("lock")
            else "without the benchmarks' lock (other benchmarks held it for most of an hour) "
        )
        + f"(load average "
        f"{run['load']} at the start, {run.get('load_at_end', '?')} at the end: the times are "
        "upper bounds; compare the ratios, measured in the same run). Simulated: "
        f"{n['shards']} shards (one per 10-hour season of 30-minute episodes; postings drawn "
        "from the real corpus' key distribution at its density, "
        f"{(n['hashes_per_second'] or 0):.1f} hashes/s, `benchmarks/simulate.py`), plus the real "
        "corpus' shards so that real clips have a true answer. Each side opened its own copy "
        "(its own corpus shards"
        + (
            ", the same simulated ones"
            if p["signature"] == n["signature"]
            else ", simulated shards of its own format"
        )
        + f"); the clips went in {lg['rounds']} rounds, previous and new taking turns, each "
        "round after 5 untimed clips. Time of `match_samples` in-process, decode excluded, as "
        "CPU time of the matching thread (on a shared machine the wall clock mostly measures the "
        "wait for a core; on a quiet one the two agree): p50 / p95 ms, `previous → new` (ratio "
        "of the p50s); right = the episode and the offset within 1 s (audio in no episode: no "
        "match).",
        "",
        "| clip | clean | degraded (noise 10/0 dB, mp3 32k, phone, reverb, gain in turn) |",
        "| --- | --- | --- |",
    ]
    for length in LENGTHS:
        k = f"clean/{length:g}s"
        if k in gn:
            lines.append(
                f"| {length:g} s ({gn[k]['clips']} each) | {cell('clean', length)} | "
                f"{cell('degraded', length)} |"
            )
    lines += [
        "",
        "The hard cases ("
        + str(gn.get(f"unseen/{HARD_LENGTHS[0]:g}s", {}).get("clips", "?"))
        + " clips per cell; passes run on average, new):",
        "",
        "| case | " + " | ".join(f"{x:g} s" for x in HARD_LENGTHS) + " |",
        "| --- | " + " | ".join("---" for _ in HARD_LENGTHS) + " |",
    ]
    for case in HARD:
        row = [
            cell(case, length) + f", {gn[f'{case}/{length:g}s']['passes_mean']:.1f} passes"
            if f"{case}/{length:g}s" in gn
            else "-"
            for length in HARD_LENGTHS
        ]
        lines.append(f"| {case} | " + " | ".join(row) + " |")
    target10, target5 = 1.25 * 7.0, 1.25 * 4.6
    mem_n = n["rss_mib_after_queries"]["RssAnon"] - n["rss_mib_before_queries"]["RssAnon"]
    corpus_line = ""
    if corpus_bytes:
        mb = _pp(corpus_bytes["previous"] / 1e6, corpus_bytes["new"] / 1e6, ".2f")
        corpus_line = f"| real corpus snapshot size | {mb} MB per hour | |"
    lines += [
        "",
        "| | previous → new | target |",
        "| --- | --- | --- |",
        f"| clean 10 s clip, p50 | {_ms1(p10)} → **{_ms1(c10)}** "
        f"(x{c10['cpu_p50_ms'] / p10['cpu_p50_ms']:.2f}) | <= {target10:.2f} ms (1.25 x 7.0 ms), "
        "and x1.25 in the same run |",
        f"| clean 5 s clip, p50 | {_ms1(p5)} → **{_ms1(c5)}** "
        f"(x{c5['cpu_p50_ms'] / p5['cpu_p50_ms']:.2f}) | <= {target5:.2f} ms (1.25 x 4.6 ms), "
        "and x1.25 in the same run |",
        f"| open the snapshot ({n['shards']} shards; each round's open, wall clock) | "
        f"{', '.join(f'{x:.0f}' for x in p['open_ms'])} → "
        f"{', '.join(f'{x:.0f}' for x in n['open_ms'])} ms | <= 100 ms |",
        f"| simulated snapshot size | {_pp(p['sim_bytes_per_hour'] / 1e6, n['sim_bytes_per_hour'] / 1e6, '.2f')} "
        f"**MB per hour** ({n['sim_bytes'] / 1e9:.2f} GB) | <= 2 MB/hour |",
        *([corpus_line] if corpus_line else []),
        f"| indexing: decode + fingerprint + sha256, CPU of the process and its ffmpeg children "
        f"| {ix(p):.0f} → **{ix(n):.0f}x realtime per core** (decode alone "
        f"{max(x['decode_only_x_per_core'] for x in n['indexing']):.0f}x) | >= 300x |",
        f"| memory the queries add (anonymous, the first round) | "
        f"{p['rss_mib_after_queries']['RssAnon'] - p['rss_mib_before_queries']['RssAnon']:.0f} → "
        f"**{mem_n:.0f} MiB** ({n.get('stacked_bitmaps_mib') or 0:.0f} MiB of it the shards' key "
        "bitmaps stacked at the first query) | <= 300 MB besides the map |",
        "",
        "A query scores at most 100 hits per hash (`MatchParams.hits_per_hash`): past that the "
        "keys commonest in the whole snapshot are left out, which bounds the work as the "
        "library grows.",
        end,
    ]
    return lines


def _ms(g: dict | None) -> str:
    return "-" if not g else f"{g['cpu_p50_ms']:.1f} / {g['cpu_p95_ms']:.1f}"


def _ms1(g: dict | None) -> str:
    return "-" if not g else f"{g['cpu_p50_ms']:.1f} ms (wall {g['p50_ms']:.1f} ms)"


def corpus_bytes(a: dict | None) -> dict | None:
    if not a or "corpus" not in a or "previous" not in a["corpus"]:
        return None
    return {k: v["bytes_per_hour"] for k, v in a["corpus"].items()}


def write_sections(res: dict, *, large: bool = True) -> None:
    """The Accuracy and (with ``large``) large-snapshot sections of RESULTS.md, in place."""
    replace_section(
        *SECTION_ACCURACY,
        accuracy_section(res.get("accuracy")),
        legacy_heading=LEGACY_HEADINGS[SECTION_ACCURACY[0]],
    )
    if large:
        replace_section(
            *SECTION_LARGE,
            large_section(res.get("large"), corpus_bytes(res.get("accuracy"))),
            legacy_heading=LEGACY_HEADINGS[SECTION_LARGE[0]],
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--previous", metavar="REF", help="the previous matcher's commit "
                    "(default: the merge-base with main; on main, the commit before the newest "
                    "change to citywok_pipeline/fingerprint/)")  # fmt: skip
    ap.add_argument("--new", metavar="REF", help="the new matcher's commit, also checked out "
                    "(default: this checkout, uncommitted changes included)")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--clips-per-seed", type=int, default=10, help="per case and length")
    ap.add_argument("--unseen-per-seed", type=int, default=3, help="per case and length")
    ap.add_argument("--hours", type=float, default=1000.0, help="0 skips the large snapshot")
    ap.add_argument("--large-clips", type=int, default=40, help="per length, clean and degraded")
    ap.add_argument("--hard-clips", type=int, default=12, help="per hard case and length")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--lock", type=Path, help="hold this lock (flock) while timing: the large "
                    "snapshot's part; accuracy does not depend on time and runs without it")  # fmt: skip
    ap.add_argument("--render-only", action="store_true",
                    help="write the sections again from benchmarks/results.json")  # fmt: skip
    ap.add_argument("--prepare-only", action="store_true", help="make the corpus and the clips")
    args = ap.parse_args()
    # Stopped with kill: the temporary worktrees are still removed (finally in measure).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.render_only:
        write_sections(json.loads(RESULTS_JSON.read_text()))
        return 0
    if args.prepare_only:
        prepare(
            build_corpus(DATA / "corpus"), seeds=args.seeds, clips_per_seed=args.clips_per_seed,
            unseen_per_seed=args.unseen_per_seed, hours=args.hours,
            large_clips_per_length=args.large_clips, hard_clips=args.hard_clips,
            rounds=args.rounds,
        )  # fmt: skip
        return 0
    res = measure(
        previous=args.previous, new=args.new, seeds=args.seeds,
        clips_per_seed=args.clips_per_seed, unseen_per_seed=args.unseen_per_seed, hours=args.hours,
        large_clips_per_length=args.large_clips, hard_clips=args.hard_clips, rounds=args.rounds,
        lock=args.lock,
    )  # fmt: skip
    old = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    old["accuracy"] = res["accuracy"]
    if res["large"]:
        old["large"] = res["large"]
    RESULTS_JSON.write_text(json.dumps(old, indent=2, default=str) + "\n")
    write_sections(old, large=bool(res["large"]))
    log("\n".join(accuracy_section(old["accuracy"]) + large_section(old.get("large"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
