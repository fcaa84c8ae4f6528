"""How well clips are matched: a generated TV-like corpus, clips of 3/5/10 s, degradations.

A clip counts as right when the best match is its episode and the offset is within 1 s.
Clips of audio that is not in the library must come back with no match; clips inside a
show's shared intro must come back ambiguous, naming that show's episodes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from citywok_pipeline.demo.degrade import DEGRADATIONS
from citywok_pipeline.demo.library import GeneratedEpisode, generate_library, generate_unseen_audio
from citywok_pipeline.fingerprint import DEFAULT_MATCH_PARAMS, MatchParams, match_samples
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.indexer import index_library
from citywok_pipeline.snapshot import Snapshot

WORK_RATE = 16_000  # degradations run here, then the clip goes to the core's rate
CLIP_LENGTHS = (3.0, 5.0, 10.0)


@dataclass
class Corpus:
    root: Path
    snapshot: Path
    episodes: list[GeneratedEpisode]
    index_report: object


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
    root, snap = work / "media", work / "snapshot"
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
    report = index_library(root, snap)
    return Corpus(root, snap, eps, report)


def _to_core_rate(x: np.ndarray, sample_rate: int) -> np.ndarray:
    return resample_poly(x, sample_rate, WORK_RATE).astype(np.float32)


def evaluate(
    corpus: Corpus,
    *,
    clips_per_cell: int = 20,
    seed: int = 0,
    match_params: MatchParams = DEFAULT_MATCH_PARAMS,
    log=print,
) -> dict:
    rng = np.random.default_rng(seed)
    audio = {e.path: decode(e.path, sample_rate=WORK_RATE) for e in corpus.episodes}
    shows: dict[str, set[str]] = defaultdict(set)
    with Snapshot.open(corpus.snapshot) as snap:
        by_source = {e.source: e for e in snap.episodes}
        ep_id = {
            ge.path: by_source[ge.path.relative_to(corpus.root).as_posix()].episode_id
            for ge in corpus.episodes
        }
        for ge in corpus.episodes:
            shows[ge.show].add(ep_id[ge.path])
        sr = snap.params.sample_rate
        cells: dict[tuple[str, float], list[bool]] = defaultdict(list)
        latencies: list[float] = []
        confident_right: list[tuple[float, bool]] = []
        for name, degrade in DEGRADATIONS.items():
            for length in CLIP_LENGTHS:
                for _ in range(clips_per_cell):
                    ge = corpus.episodes[rng.integers(len(corpus.episodes))]
                    start = float(rng.uniform(ge.intro_s + 0.5, ge.duration_s - length - 0.5))
                    x = audio[ge.path][int(start * WORK_RATE) : int((start + length) * WORK_RATE)]
                    q = _to_core_rate(degrade(x, WORK_RATE, rng), sr)
                    t0 = time.perf_counter()
                    r = match_samples(q, snap, match_params=match_params)
                    latencies.append(time.perf_counter() - t0)
                    ok = (
                        bool(r.matches)
                        and r.matches[0].episode_id == ep_id[ge.path]
                        and abs(r.matches[0].offset_s - start) <= 1.0
                    )
                    cells[(name, length)].append(ok)
                    if r.matches:
                        confident_right.append((r.matches[0].confidence, ok))
        # Not in the library: must not match.
        unseen_src = decode(
            generate_unseen_audio(
                corpus.root.parent / "unseen.wav", duration_s=240.0, seed=seed + 99
            ),
            sample_rate=WORK_RATE,
        )
        false_matches, unseen_total = 0, 0
        names = list(DEGRADATIONS)
        for i in range(clips_per_cell * len(names)):
            length = CLIP_LENGTHS[i % 3]
            start = float(rng.uniform(0, unseen_src.size / WORK_RATE - length))
            x = unseen_src[int(start * WORK_RATE) : int((start + length) * WORK_RATE)]
            q = _to_core_rate(DEGRADATIONS[names[i % len(names)]](x, WORK_RATE, rng), sr)
            r = match_samples(q, snap, match_params=match_params)
            unseen_total += 1
            if r.matches:
                false_matches += 1
                confident_right.append((r.matches[0].confidence, False))
        # Inside the shared intro: ambiguous, naming the show's episodes.
        intro_ok, intro_total = 0, 0
        for ge in corpus.episodes[:: max(1, len(corpus.episodes) // 12)]:
            for length in (3.0, 5.0):
                start = float(rng.uniform(0, ge.intro_s - length))
                x = audio[ge.path][int(start * WORK_RATE) : int((start + length) * WORK_RATE)]
                r = match_samples(_to_core_rate(x, sr), snap, match_params=match_params)
                intro_total += 1
                named = {m.episode_id for m in r.matches}
                if r.ambiguous and named == shows[ge.show]:
                    intro_ok += 1
    per_degradation = {
        name: float(np.mean([ok for (n, _), oks in cells.items() if n == name for ok in oks]))
        for name in DEGRADATIONS
    }
    per_length = {
        length: float(np.mean([ok for (_, ln), oks in cells.items() if ln == length for ok in oks]))
        for length in CLIP_LENGTHS
    }
    overall = float(np.mean([ok for oks in cells.values() for ok in oks]))
    # Calibration: among answers with confidence in a band, how many were right.
    bands = [(0.5, 0.9), (0.9, 0.99), (0.99, 1.01)]
    calibration = []
    for lo, hi in bands:
        sel = [ok for c, ok in confident_right if lo <= c < hi]
        calibration.append(
            {
                "band": f"[{lo}, {min(hi, 1.0)}]",
                "answers": len(sel),
                "right": float(np.mean(sel)) if sel else None,
            }
        )
    return {
        "overall": overall,
        "per_degradation": per_degradation,
        "per_length": per_length,
        "cells": {f"{n}/{int(ln)}s": float(np.mean(v)) for (n, ln), v in cells.items()},
        "clips": sum(len(v) for v in cells.values()),
        "unseen_no_match": 1 - false_matches / unseen_total,
        "unseen_clips": unseen_total,
        "intro_ambiguous": intro_ok / intro_total,
        "intro_clips": intro_total,
        "latency_ms_p50": 1e3 * float(np.median(latencies)),
        "calibration": calibration,
    }
