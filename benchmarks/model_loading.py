"""What loading the models costs a video, per executor.

The GPU steps of every video (``transcript``, ``segment_embeddings``) need the transcriber and
the embedder. Where a step runs in a fresh process (the multiprocess executor: a process per
step; Kubernetes: a pod per step) it pays the process start and the model load every time;
a Celery solo worker (and the in-process executor, within one run) loads each model once and
keeps it for every later step. This measures, on this machine, in fresh Python processes:

- ``start``: a step process importing Dagster and the code location (``citywok_pipeline.definitions``);
- ``asr``: loading the transcriber (the packaged Whisper tiny.en, faster-whisper, CPU int8);
- ``embedder``: loading the embedder (the packaged all-MiniLM-L6-v2, CPU);
- ``again``: asking both resources for their model a second time in the same process (what a
  Celery solo worker pays from the second step on).

    flock /tmp/citywok-bench.lock .venv/bin/python -m benchmarks.model_loading [--runs 5]

Writes benchmarks/model_loading.json and its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .report import machine, replace_section

HERE = Path(__file__).parent
START, END = "<!-- model-loading:start -->", "<!-- model-loading:end -->"

_PROBE = r"""
import json, time
t0 = time.perf_counter()
import citywok_pipeline.definitions  # what a step process imports before its step runs
t1 = time.perf_counter()
from citywok_pipeline.resources import TranscriberResource
from citywok_pipeline.resources.embedder import EmbedderResource
asr, emb = TranscriberResource(backend="faster-whisper", device="cpu"), EmbedderResource(device="cpu")
asr.load(); t2 = time.perf_counter()
emb.load(); t3 = time.perf_counter()
asr.load(); emb.load(); t4 = time.perf_counter()
print(json.dumps({"start": t1 - t0, "asr": t2 - t1, "embedder": t3 - t2, "again": t4 - t3}))
"""


def probe() -> dict[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes to measure")
    args = parser.parse_args()
    load = os.getloadavg()
    runs = []
    for i in range(args.runs):
        runs.append(probe())
        sys.stderr.write(f"run {i + 1}/{args.runs}: {runs[-1]}\n")
    p50 = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    per_step = p50["start"] + p50["asr"] + p50["embedder"]
    # Per video: the transcript step loads the transcriber, segment_embeddings the embedder,
    # each in its own process (start paid twice).
    fresh_per_video = 2 * p50["start"] + p50["asr"] + p50["embedder"]
    result = {
        "machine": machine(),
        "load_average_1m": round(load[0], 2),
        "runs": args.runs,
        "p50_s": {k: round(v, 3) for k, v in p50.items()},
        "per_video_s": {
            "multiprocess": round(fresh_per_video, 2),
            "k8s": round(fresh_per_video, 2),
            "celery_solo": round(p50["again"], 4),
            "in_process": round(p50["again"], 4),
        },
        "first_step_s": round(per_step, 2),
    }
    (HERE / "model_loading.json").write_text(json.dumps(result, indent=2) + "\n")
    v = result["per_video_s"]
    replace_section(START, END, [
        START,
        "## Model loading per executor",
        "",
        f"`python -m benchmarks.model_loading --runs {args.runs}` on {result['machine']} "
        f"(1-minute load {result['load_average_1m']} when it started), medians of fresh processes:",
        "",
        "| what | seconds |",
        "| --- | --- |",
        f"| a step process imports Dagster and the code location | {p50['start']:.2f} |",
        f"| loading the transcriber (Whisper tiny.en, faster-whisper, CPU int8) | {p50['asr']:.2f} |",
        f"| loading the embedder (all-MiniLM-L6-v2, CPU) | {p50['embedder']:.2f} |",
        f"| both again in the same process | {p50['again']:.4f} |",
        "",
        "What loading costs each video (its `transcript` and `segment_embeddings` steps):",
        "",
        "| executor | seconds per video | why |",
        "| --- | --- | --- |",
        f"| multiprocess | {v['multiprocess']:.2f} | a process per step: two starts, both models |",
        f"| k8s | {v['k8s']:.2f} (plus pod scheduling and the image pull) | a pod per step, the same |",
        f"| Celery, solo GPU worker | {v['celery_solo']:.4f} after the worker's first video "
        f"({result['first_step_s']:.2f} once) | the worker process keeps both models |",
        f"| in_process | {v['in_process']:.4f} after a run's first video | one process per run |",
        "",
        "Larger models (whisperx large-v3 on a GPU) load for tens of seconds: the gap grows with them.",
        END,
    ])  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
