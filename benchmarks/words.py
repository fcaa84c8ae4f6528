"""Identifying clips by what is said (:mod:`citywok_pipeline.transcripts.identify`): how often,
how precisely, and how often unseen speech is rightly turned away.

The corpus (:mod:`citywok_pipeline.demo.library`, seed 11): 2 shows x 6 episodes of 90 s with
8 s intros. The snapshot holds episodes 1-4 of each show (fingerprints and transcripts,
``index_library`` with the packaged tiny.en and MiniLM). Clips of 5 s and 10 s start anywhere
after the intro:

- ``remix``: episodes 1-4 with their dialogue kept sample for sample and their music replaced
  (``generate_remixed_library``, remix 1). The fingerprint matches most of these anyway (the
  dialogue's peaks are the episode's): its share is reported, and the words are measured alone.
- ``revoice``: the same lines said by other voices from the same seconds over other music
  (remix 2, revoice 1), as a dub or new ADR: the fingerprint finds nothing, which is when
  ``match --by-words`` and ``POST /match`` ask the words.
- unseen speech, two kinds: ``heldout``, episodes 5-6 (never indexed) in all three mixes: the
  library's own vocabulary and sentence templates, the hardest null there is here; and
  ``other``, ``render_unseen_samples`` (speech in other words over other music).

Unseen clips come in two draws: ``calibration`` (seed 1, 120 clips per length), on which the
evidence threshold and the cost of each clip word were set (the highest evidence a
calibration clip reached is reported beside it), and ``test`` (seed 2), on which the rejection
rate is measured. The previous alignment is scored beside the current one from the same
transcripts and snapshot: ``--previous REF`` (default :data:`PREVIOUS_REF`, the commit before
letters were aligned: whole words) is checked out into a temporary ``git worktree``
(:func:`benchmarks.accuracy.previous_checkout`), and this file scores with that checkout's
package, run as a script in a subprocess with ``PYTHONPATH`` there (``--score-only``). A
clip's answer counts as found when it names its episode with confidence >= 0.9 (the audio
path's threshold) and as rejected when there is no answer.

    nice -n 5 flock /tmp/citywok-bench.lock .venv/bin/python -m benchmarks.words [--clips 30]
        [--previous REF]

Transcripts are kept in ``--work`` (the corpus and snapshot too), so a second run only scores.
Writes benchmarks/words.json and its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script (the previous side, ``--score-only``), this file imports only the package on
# ``PYTHONPATH``: the benchmarks' own modules are imported in main().
from citywok_pipeline.transcripts.identify import DEFAULT_WORDS_PARAMS, WordsParams

HERE = Path(__file__).parent
START, END = "<!-- words:start -->", "<!-- words:end -->"
CORPUS = dict(shows=2, seasons=1, episodes=6, duration_s=90.0, intro_s=8.0, seed=11)
INDEXED = (1, 2, 3, 4)
HELD_OUT = (5, 6)
LENGTHS = (10.0, 5.0)
MIXES = {"original": "media", "remix": "remix", "revoice": "revoice"}
# The commit before letters were aligned and each clip word charged (ac1dff4): whole words,
# evidence 12.0 for an answer, set on 40 calibration clips per length. Its defaults are scored
# beside the current ones.
PREVIOUS_REF = "1c4c41e63f5f2f52e67f209dee90809124b3b6d5"


def build_corpus(work: Path) -> Path:
    """The three mixes of the corpus and the snapshot of episodes 1-4; reused when there."""
    from citywok_pipeline.demo.library import generate_library, generate_remixed_library
    from citywok_pipeline.indexer import TranscriptSide, index_library

    snap = work / "snap"
    if (work / "corpus.done").exists():
        return snap
    generate_library(work / "media", **CORPUS)  # type: ignore[arg-type]
    generate_remixed_library(work / "remix", **CORPUS, remix=1)  # type: ignore[arg-type]
    generate_remixed_library(work / "revoice", **CORPUS, remix=2, revoice=1)  # type: ignore[arg-type]
    indexed = work / "indexed"
    held = [f"*E{e:02d}*" for e in HELD_OUT]
    shutil.copytree(work / "media", indexed, ignore=shutil.ignore_patterns(*held))
    report = index_library(indexed, snap, transcripts=TranscriptSide.default(), jobs=1)
    if report.failures:
        raise RuntimeError(f"indexing the corpus failed: {report.failures}")
    (work / "corpus.done").write_text("")
    return snap


def episode_path(work: Path, mix: str, show: int, episode: int) -> Path:
    from citywok_pipeline.demo.library import show_name

    name = show_name(show)
    return work / MIXES[mix] / name / "Season 01" / f"{name} - S01E{episode:02d}.mp3"


def plan(clips: int, calibration: int, test: int) -> list[dict[str, Any]]:
    """Every clip to measure: what it is and where it starts (deterministic)."""
    from citywok_pipeline.demo.library import show_name

    out: list[dict[str, Any]] = []
    content = (CORPUS["intro_s"], CORPUS["duration_s"])
    for length in LENGTHS:
        for kind in ("remix", "revoice"):
            rng = np.random.default_rng([0, int(length), len(kind)])
            for i in range(clips):
                show, episode = i % 2, INDEXED[(i // 2) % len(INDEXED)]
                start = float(rng.uniform(content[0], content[1] - length))
                truth = f"{show_name(show).lower().replace(' ', '-')}-s01e{episode:02d}"
                out.append(dict(kind=kind, length=length, mix=kind, show=show,
                                episode=episode, start=start, truth=truth))  # fmt: skip
        for draw, seed, n in (("calibration", 1, calibration), ("test", 2, test)):
            rng = np.random.default_rng([seed, int(length)])
            n_other = n // 4
            for i in range(n - n_other):
                mix = ("original", "remix", "revoice")[i % 3]
                show, episode = (i // 3) % 2, HELD_OUT[(i // 6) % len(HELD_OUT)]
                start = float(rng.uniform(content[0], content[1] - length))
                out.append(dict(kind="heldout", draw=draw, length=length, mix=mix, show=show,
                                episode=episode, start=start, truth=None))  # fmt: skip
            for i in range(n_other):
                out.append(dict(kind="other", draw=draw, length=length, seed=seed * 1000 + i,
                                start=0.0, truth=None))  # fmt: skip
    for c in out:
        c["id"] = json.dumps({k: c[k] for k in sorted(c) if k != "truth"}, sort_keys=True)
    return out


def transcribe_all(work: Path, clips: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each clip's transcript (and the fingerprint's answer), cached in work/clips.jsonl."""
    from citywok_pipeline.demo.library import render_unseen_samples
    from citywok_pipeline.fingerprint.audio import decode
    from citywok_pipeline.fingerprint.matcher import match_samples
    from citywok_pipeline.snapshot import Snapshot
    from citywok_pipeline.transcripts.transcriber import SAMPLE_RATE, load_transcriber

    cache_file = work / "clips.jsonl"
    done = read_transcripts(work)
    todo = [c for c in clips if c["id"] not in done]
    if not todo:
        return done
    transcriber = load_transcriber()
    audio: dict[tuple[str, int, int, int], np.ndarray] = {}
    with Snapshot.open(work / "snap") as snap, open(cache_file, "a") as cache:
        fp_rate = snap.params.sample_rate
        for n, c in enumerate(todo, 1):
            if c["kind"] == "other":
                x16 = render_unseen_samples(duration_s=c["length"], seed=c["seed"])
                x8 = x16[::2].copy() if fp_rate * 2 == SAMPLE_RATE else None
            else:
                out = []
                for rate in (SAMPLE_RATE, fp_rate):
                    key = (c["mix"], c["show"], c["episode"], rate)
                    if key not in audio:
                        path = episode_path(work, c["mix"], c["show"], c["episode"])
                        audio[key] = decode(path, sample_rate=rate)
                    a = round(c["start"] * rate)
                    out.append(audio[key][a : a + round(c["length"] * rate)])
                x16, x8 = out
            t = time.perf_counter()
            transcript = transcriber.transcribe(x16)
            elapsed = time.perf_counter() - t
            fp = match_samples(x8, snap) if x8 is not None else None
            row = {
                "id": c["id"],
                "transcribe_s": round(elapsed, 3),
                "audio": fp.matches[0].episode_id if fp is not None and fp.matches else None,
                "transcript": json.loads(transcript.to_json()),
            }
            done[c["id"]] = row
            cache.write(json.dumps(row) + "\n")
            cache.flush()
            if n % 20 == 0:
                sys.stderr.write(f"transcribed {n}/{len(todo)} clips\n")
    return done


def read_transcripts(work: Path) -> dict[str, dict[str, Any]]:
    """The clips transcribed so far (work/clips.jsonl), by id."""
    cache_file = work / "clips.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if cache_file.exists():
        for line in cache_file.read_text().splitlines():
            row = json.loads(line)
            done[row["id"]] = row
    return done


def score(
    work: Path,
    clips: list[dict[str, Any]],
    done: dict[str, dict[str, Any]],
    params: WordsParams,
) -> dict[str, Any]:
    from citywok_pipeline.snapshot import Snapshot
    from citywok_pipeline.transcripts.identify import (
        _clip_words,
        _score_candidates,
        identify_transcript,
    )
    from citywok_pipeline.transcripts.records import Transcript
    from citywok_pipeline.transcripts.search import SegmentSearcher

    groups: dict[str, dict[str, Any]] = {}
    evidence_calibration: dict[float, list[float]] = {}
    search_s: list[float] = []
    with Snapshot.open(work / "snap") as snap:
        searcher = SegmentSearcher(snap)
        for c in clips:
            row = done[c["id"]]
            transcript = Transcript.from_json(json.dumps(row["transcript"]).encode())
            t = time.perf_counter()
            result = identify_transcript(transcript, searcher, params=params)
            search_s.append(time.perf_counter() - t)
            words = _clip_words(transcript, params.max_words)
            cands = _score_candidates(words, transcript, searcher, params) if words.tokens else []
            best_evidence = cands[0].evidence if cands else 0.0
            key = f"{c['kind']}{'/' + c['draw'] if 'draw' in c else ''} {c['length']:g}s"
            g = groups.setdefault(key, {"n": 0, "found": 0, "offset_ok": 0, "rejected": 0,
                                        "audio": 0, "no_speech": 0, "offset_err": [],
                                        "transcribe_s": []})  # fmt: skip
            g["n"] += 1
            g["transcribe_s"].append(row["transcribe_s"])
            g["no_speech"] += result.note != ""
            g["rejected"] += not result.matches
            if c["truth"] is None:
                if c.get("draw") == "calibration":
                    evidence_calibration.setdefault(c["length"], []).append(best_evidence)
                continue
            g["audio"] += row["audio"] == c["truth"]
            if result.matches and result.matches[0].episode_id == c["truth"]:
                g["found"] += 1
                err = abs(result.matches[0].offset_s - c["start"])
                g["offset_err"].append(err)
                g["offset_ok"] += err <= 2.0
    for g in groups.values():
        errs, ts = g.pop("offset_err"), g.pop("transcribe_s")
        g["offset_err_p50_s"] = round(statistics.median(errs), 2) if errs else None
        g["offset_err_max_s"] = round(max(errs), 2) if errs else None
        g["transcribe_p50_s"] = round(statistics.median(ts), 2)
    threshold = params.centre + params.scale * float(
        np.log(params.min_confidence / (1 - params.min_confidence))
    )
    return {
        "groups": groups,
        "threshold_evidence": round(threshold, 2),
        "calibration_max_evidence": {
            f"{length:g}s": round(max(ev), 2) for length, ev in evidence_calibration.items()
        },
        "search_p50_ms": round(1000 * statistics.median(search_s), 2),
    }


def score_previous(work: Path, counts: dict[str, int], ref: str) -> dict[str, Any]:
    """:func:`score` by the code of ``ref``, with its defaults, on the same transcripts and
    snapshot: this file run as a script (``--score-only``) with ``PYTHONPATH`` at a temporary
    ``git worktree`` of ``ref``, as :mod:`benchmarks.accuracy` runs its previous side."""
    from .accuracy import Side, checkout_dir, previous_checkout

    made: list[Path] = []
    try:
        root, commit = previous_checkout(ref, checkout_dir("words-previous", made))
        out = work / "previous-score.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--score-only", str(out),
               "--work", str(work), *(f"--{k}={v}" for k, v in counts.items())]  # fmt: skip
        subprocess.run(cmd, env=Side("previous", root, commit, work).env(), check=True)
        result: dict[str, Any] = json.loads(out.read_text())
        result["commit"] = commit
        return result
    finally:
        for d in made:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(d)], cwd=HERE.parent, check=False
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/citywok-bench-words"))
    parser.add_argument("--clips", type=int, default=30, help="clips per kind and length")
    parser.add_argument("--calibration", type=int, default=120, help="unseen clips per length")
    parser.add_argument("--test", type=int, default=100, help="unseen clips per length")
    parser.add_argument(
        "--previous", default=PREVIOUS_REF, metavar="REF",
        help="the commit whose alignment is scored beside this checkout's [default: the one "
        "before letters were aligned]",
    )  # fmt: skip
    parser.add_argument("--score-only", type=Path, metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    counts = {"clips": args.clips, "calibration": args.calibration, "test": args.test}
    clips = plan(args.clips, args.calibration, args.test)
    if args.score_only:
        # The previous side: the transcripts are there; score them with this package's defaults.
        scored = score(args.work, clips, read_transcripts(args.work), DEFAULT_WORDS_PARAMS)
        args.score_only.write_text(json.dumps(scored) + "\n")
        return 0
    from .report import machine, replace_section

    load = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    build_corpus(args.work)
    corpus_s = time.perf_counter() - t
    done = transcribe_all(args.work, clips)
    result = {
        "machine": machine(),
        "load_average_1m": round(load, 2),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "corpus_s": round(corpus_s, 1),
        "args": counts,
        **score(args.work, clips, done, DEFAULT_WORDS_PARAMS),
        "previous": score_previous(args.work, counts, args.previous),
        "per_word": DEFAULT_WORDS_PARAMS.per_word,
    }
    (HERE / "words.json").write_text(json.dumps(result, indent=2) + "\n")
    replace_section(START, END, section(result))
    print(json.dumps(result, indent=2))
    return 0


def section(r: dict[str, Any]) -> list[str]:
    g = r["groups"]
    prev = r["previous"]["groups"]

    def pct(a: int, n: int) -> str:
        return f"{100 * a / n:.0f}% ({a}/{n})" if n else "-"

    rows = []
    for kind, what in (("remix", "dialogue kept, music replaced"),
                       ("revoice", "lines re-voiced, music replaced")):  # fmt: skip
        for length in LENGTHS:
            x = g.get(f"{kind} {length:g}s")
            if x:
                p = prev[f"{kind} {length:g}s"]
                rows.append(
                    f"| {kind} ({what}) | {length:g} s | {pct(x['found'], x['n'])} | "
                    f"{pct(p['found'], p['n'])} | "
                    f"{pct(x['offset_ok'], x['found'])} | {x['offset_err_p50_s']} / "
                    f"{x['offset_err_max_s']} | {pct(x['audio'], x['n'])} | {x['transcribe_p50_s']} |"
                )
    unseen = []
    for kind, what in (("heldout", "episodes never indexed: the library's words and templates"),
                       ("other", "speech in other words")):  # fmt: skip
        for draw in ("calibration", "test"):
            for length in LENGTHS:
                x = g.get(f"{kind}/{draw} {length:g}s")
                if x:
                    p = prev[f"{kind}/{draw} {length:g}s"]
                    unseen.append(
                        f"| {kind} ({what}) | {draw} | {length:g} s | "
                        f"{pct(x['rejected'], x['n'])} | {pct(p['rejected'], p['n'])} |"
                    )
    return [
        START,
        "## Clips identified by their words",
        "",
        f"`python -m benchmarks.words --clips {r['args']['clips']} --calibration "
        f"{r['args']['calibration']} --test {r['args']['test']}` on {r['machine']} (1-minute "
        f"load {r['load_average_1m']} at the start, {r['load_average_1m_end']} at the end). "
        "Two shows of six 90 s episodes (seed 11), episodes 1-4 indexed; found = a confident "
        "answer (>= 0.9) naming the clip's episode.",
        "",
        "| clips of | length | found (top-1) | previous: found | offset within 2 s "
        "| offset error p50 / max (s) | the fingerprint finds it | transcription p50 (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "| unseen speech | draw | length | rejected (no answer) | previous: rejected |",
        "| --- | --- | --- | --- | --- |",
        *unseen,
        "",
        "Previous: whole words aligned, evidence >= "
        f"{r['previous']['threshold_evidence']} for an answer (set on the first 40 calibration "
        "clips per length; the highest evidence the calibration clips of unseen speech reach "
        f"under it: {_maxima(r['previous'])}). Now: letters aligned, each of the clip's words "
        f"costing {r['per_word']}, evidence >= {r['threshold_evidence']} (the calibration "
        f"clips' highest: {_maxima(r)}). Scoring a transcribed clip against the snapshot: "
        f"{r['search_p50_ms']} ms p50 (previous {r['previous']['search_p50_ms']} ms).",
        END,
    ]


def _maxima(r: dict[str, Any]) -> str:
    return ", ".join(f"{v} at {k}" for k, v in r["calibration_max_evidence"].items())


if __name__ == "__main__":
    sys.exit(main())
