"""`make demo`: generate a small TV library, run the Dagster pipeline on it, match clips.

Everything lives under $CITYWOK_HOME (default ./.citywok): the library in demo-media/, the
Dagster instance in dagster/ (SQLite; `make dev` opens the same one in the UI), the catalog,
the artefacts, the snapshot in snapshot/, the clips in demo-clips/. The pipeline runs in this
process with the embedded defaults, no daemon: the media scan sensor discovers the library,
every video partition is materialised (raw_audio, fingerprints), then the season sensor's
shards (season_snapshot, with its blocking check). Re-running only redoes what changed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..fingerprint.audio import decode
from ..fingerprint.matcher import match_samples
from ..settings import citywok_home
from ..snapshot import Snapshot
from ..transcripts.search import search_snapshot
from .degrade import DEGRADATIONS, cut
from .library import SAMPLE_RATE, encode, generate_library, generate_unseen_audio

# The demo library: two shows, two seasons each, three 45 s episodes per season.
DEMO_LIBRARY = dict(
    shows=2, seasons=2, episodes=3, duration_s=45.0, intro_s=8.0, seed=0,
    formats=("mp3", "mkv", "m4a", "flac"),
)  # fmt: skip


def say(text: str) -> None:
    sys.stderr.write(text + "\n")


def materialise(home: Path, media: Path) -> bool:
    """Discover ``media`` and materialise every asset for every partition, in-process."""
    import dagster as dg

    from ..definitions import build_definitions, resources_for
    from ..embedded import prepare_dagster_home, run_pipeline_once
    from ..resources import ArtefactStore, SeasonFoldersResource

    # The embedded defaults (local folders under CITYWOK_HOME, packaged CPU models), whatever
    # the environment says, with the demo library as the media source.
    defs = build_definitions(
        {
            **resources_for({}),
            "media": SeasonFoldersResource(root=str(media)),
            "artefacts": ArtefactStore(),
        }
    )
    started = time.perf_counter()
    with dg.DagsterInstance.from_config(str(prepare_dagster_home(home / "dagster"))) as instance:
        report = run_pipeline_once(defs, instance, progress=lambda line: say(f"   run {line}"))
        published = None
        if not report.failures:
            # The last asset: the snapshot as an immutable version in the (local) bucket.
            result = defs.resolve_job_def("publish_job").execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            published = result.success
    videos = report.runs_of("video_job")
    seasons = report.runs_of("season_snapshot_job")
    for name, reason in report.skipped.items():
        say(f"   {name}: {reason}")
    say(
        f"   {sum(r.success for r in videos)}/{len(videos)} video run(s) (raw_audio, fingerprints, transcript, segment_embeddings) and "
        f"{sum(r.success for r in seasons)}/{len(seasons)} season run(s) (season_snapshot + check) "
        f"succeeded in {time.perf_counter() - started:.1f} s"
    )
    for r in report.failures:
        say(f"   FAILED {r.job} {r.partition}: {r.error}")
    if published is not None:
        say(
            f"   publish_job (published_version): {'succeeded' if published else 'FAILED'}; "
            f"versions in {home / 'published'}"
        )
    return not report.failures and bool(published)


def main() -> int:
    home = citywok_home()
    media, snapshot, clips = home / "demo-media", home / "snapshot", home / "demo-clips"
    say(f"== 1. A demo library of TV-like episodes in {media}")
    episodes = generate_library(media, **DEMO_LIBRARY, progress=True)  # type: ignore[arg-type]
    say(f"   {len(episodes)} episodes: dialogue over music, each show with its own shared intro")

    say(
        f"== 2. Discover it and materialise every asset for every partition (Dagster, in-process, {home / 'dagster'})"
    )
    if not materialise(home, media):
        return 1
    say(f"   the snapshot: {snapshot}")

    say("== 3. Record some clips: a noisy phone-like recording, a clip of the intro, unseen audio")
    clips.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    target = episodes[4]
    source = decode(target.path, sample_rate=SAMPLE_RATE)
    noisy = DEGRADATIONS["telephone"](
        DEGRADATIONS["noise_10db"](
            cut(source, SAMPLE_RATE, start_s=21.5, duration_s=5.0), SAMPLE_RATE, rng
        ),
        SAMPLE_RATE,
        rng,
    )
    wanted = {
        "noisy-phone-clip.mp3": (
            noisy,
            f"{target.path.name} from 21.5 s, telephone band, 10 dB noise",
        ),
        "intro-clip.wav": (
            cut(source, SAMPLE_RATE, start_s=2.0, duration_s=4.0),
            "inside the shared intro",
        ),
    }
    for name, (samples, _) in wanted.items():
        encode(samples, clips / name, sample_rate=SAMPLE_RATE)
    unseen = generate_unseen_audio(clips / "unseen.flac", duration_s=6.0, seed=5)

    say("== 4. Match them (citywok match SNAPSHOT CLIP --json)")
    with Snapshot.open(snapshot) as snap:
        for path, what in [
            *((clips / n, w) for n, (_, w) in wanted.items()),
            (unseen, "audio not in the library"),
        ]:
            result = match_samples(decode(path, sample_rate=snap.params.sample_rate), snap)
            say(f"\n   {path.name}: {what}")
            print(json.dumps(result.to_dict(str(path))))

    say("\n== 5. Search the transcripts (citywok search SNAPSHOT TEXT --json)")
    with Snapshot.open(snapshot) as snap:
        heard = [
            (shard, row)
            for shard in snap.shards
            if shard.segments is not None
            for row in range(len(shard.segments))
            if shard.episodes[int(shard.segments.episode[row])].source.endswith(target.path.name)
        ]
        if heard:
            shard, row = max(heard, key=lambda h: len(h[0].segments.text(h[1]).split()))
            text = shard.segments.text(row)
            say(f"   what the transcriber heard in {target.path.name}: {text!r}")
            for hit in search_snapshot(snap, text, limit=3):
                print(json.dumps(hit.to_dict()))
        else:
            say("   the snapshot holds no transcript segments")
    say(f"\nTry it yourself: .venv/bin/citywok match {snapshot} {clips / 'noisy-phone-clip.mp3'}")
    say(f'                 .venv/bin/citywok search {snapshot} "where did you put it" --limit 3')
    say("Browse the assets, partitions and runs: make dev (Dagster UI on http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
