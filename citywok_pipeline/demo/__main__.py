"""`make demo`: generate a small TV library, index it, and match clips against it.

Everything lives under $CITYWOK_HOME (default ./.citywok): the library in demo-media/, the
snapshot in snapshot/, the clips in demo-clips/. Re-running reuses what is there.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from tqdm import tqdm

from ..fingerprint.audio import decode
from ..fingerprint.matcher import match_samples
from ..indexer import index_library
from ..settings import citywok_home
from ..snapshot import Snapshot
from .degrade import DEGRADATIONS, cut
from .library import SAMPLE_RATE, encode, generate_library, generate_unseen_audio


def say(text: str) -> None:
    sys.stderr.write(text + "\n")


def main() -> int:
    home = citywok_home()
    media, snapshot, clips = home / "demo-media", home / "snapshot", home / "demo-clips"
    say(f"== 1. A demo library of TV-like episodes in {media}")
    episodes = generate_library(
        media,
        shows=2,
        seasons=2,
        episodes=3,
        duration_s=45.0,
        intro_s=8.0,
        seed=0,
        formats=("mp3", "mkv", "m4a", "flac"),
        progress=True,
    )
    say(f"   {len(episodes)} episodes: dialogue over music, each show with its own shared intro")

    say(f"== 2. Index it into {snapshot}")
    report = index_library(
        media,
        snapshot,
        progress=lambda it, total: tqdm(
            it, total=total, unit="file", desc="   fingerprinting", file=sys.stderr
        ),
    )
    say(
        f"   {len(report.seasons_built)} season shard(s) built, {len(report.seasons_unchanged)} unchanged, "
        f"{report.decoded} file(s) fingerprinted, {report.reused} reused, in {report.elapsed_s:.1f} s"
    )

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
    say(f"\nTry it yourself: .venv/bin/citywok match {snapshot} {clips / 'noisy-phone-clip.mp3'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
