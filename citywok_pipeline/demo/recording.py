"""Long recordings for the segmenter: excerpts of episodes with unseen audio between them.

A compilation or a recorded broadcast, made from known parts: :func:`compose_recording` cuts
excerpts from episodes (some from inside a show's shared intro), puts stretches of audio that
is in no episode between them (and sometimes none: two excerpts back to back), and records
where each part lies, so a benchmark can check every boundary and offset a segmenter reports.
Degrade the result with :data:`citywok_pipeline.demo.degrade.DEGRADATIONS`: they keep the
recording aligned, so the parts' times stay true.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from citywok_pipeline.fingerprint.params import ParameterError

# A cut between parts is faded over this long (a hard splice clicks: a broadband transient
# no real edit has); the boundary is the middle of the fade.
FADE_S = 0.01


@dataclass(frozen=True)
class Source:
    """An episode excerpts can be cut from.

    Attributes
    ----------
    key : str
        What a benchmark compares answers with (an episode id).
    samples : np.ndarray
        Its audio, mono float32 at the recording's rate.
    show : str
        Episodes of one show share their intro.
    intro_s : float
        The shared intro is ``[0, intro_s)``; excerpts of the episode's own audio start after.
    """

    key: str
    samples: np.ndarray
    show: str = ""
    intro_s: float = 0.0


@dataclass(frozen=True)
class Part:
    """One stretch of a recording: ``kind`` is ``"excerpt"`` (an episode's own audio),
    ``"intro"`` (inside a show's shared intro) or ``"unseen"`` (in no episode).

    ``offset_s`` is the episode second at ``start_s``; ``key`` and ``show`` name the episode
    (for an intro: one of the episodes it was cut from; every episode of ``show`` has it).
    """

    kind: str
    start_s: float
    end_s: float
    key: str = ""
    show: str = ""
    offset_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Recording:
    """The samples and their parts, in order and without gaps."""

    samples: np.ndarray
    sample_rate: int
    parts: tuple[Part, ...]

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    def excerpts(self) -> list[Part]:
        """The parts that are audio of an episode (own audio and intros)."""
        return [p for p in self.parts if p.kind != "unseen"]

    def unseen(self) -> list[Part]:
        return [p for p in self.parts if p.kind == "unseen"]


def compose_recording(
    sources: Sequence[Source],
    unseen: np.ndarray,
    *,
    sample_rate: int,
    rng: np.random.Generator,
    excerpts: tuple[int, int] = (4, 8),
    excerpt_s: tuple[float, float] = (6.0, 20.0),
    unseen_s: tuple[float, float] = (2.0, 10.0),
    intro_share: float = 0.15,
    back_to_back: float = 0.15,
) -> Recording:
    """A recording of excerpts of ``sources`` with stretches of ``unseen`` audio between them.

    Parameters
    ----------
    sources : sequence of Source
        Episodes to cut from, at ``sample_rate``; each must be longer than its intro plus the
        longest excerpt.
    unseen : np.ndarray
        Audio in no source (e.g. :func:`~citywok_pipeline.demo.library.render_unseen_samples`),
        at least as long as the longest unseen stretch; stretches are cut from it at random.
    sample_rate : int
        Hz.
    rng : np.random.Generator
        Draws everything: the same generator state gives the same recording.
    excerpts : (int, int)
        Fewest and most excerpts (inclusive).
    excerpt_s, unseen_s : (float, float)
        Ranges of the excerpts' and the unseen stretches' lengths, in seconds. An intro
        excerpt is as long as the intro allows, at most ``excerpt_s[1]``.
    intro_share : float
        Chance that an excerpt is cut from inside a show's intro (a source with an intro of at
        least ``excerpt_s[0]`` seconds).
    back_to_back : float
        Chance that an excerpt follows the previous one with no unseen audio between. The
        recording always starts and ends with unseen audio.

    Returns
    -------
    Recording
    """
    if not sources:
        raise ParameterError("compose_recording needs at least one source")
    lo_n, hi_n = excerpts
    lo_s, hi_s = excerpt_s
    if not 1 <= lo_n <= hi_n or not 0 < lo_s <= hi_s or not 0 < unseen_s[0] <= unseen_s[1]:
        raise ParameterError(f"bad ranges: excerpts {excerpts}, {excerpt_s} s, {unseen_s} s")
    if unseen.size < unseen_s[1] * sample_rate:
        raise ParameterError(f"unseen audio must be at least {unseen_s[1]} s long")
    for s in sources:
        if s.samples.size / sample_rate < s.intro_s + hi_s + 1.0:
            raise ParameterError(f"{s.key}: too short for {hi_s} s excerpts after its intro")
    with_intro = [s for s in sources if s.intro_s >= lo_s]
    pieces: list[np.ndarray] = []
    parts: list[Part] = []
    at = 0

    def add(kind: str, x: np.ndarray, **fields: object) -> None:
        nonlocal at
        pieces.append(_faded(x, sample_rate))
        start = at / sample_rate
        at += x.size
        parts.append(Part(kind, start, at / sample_rate, **fields))  # type: ignore[arg-type]

    def add_unseen() -> None:
        n = round(rng.uniform(*unseen_s) * sample_rate)
        i = int(rng.integers(0, unseen.size - n + 1))
        add("unseen", unseen[i : i + n])

    add_unseen()
    count = int(rng.integers(lo_n, hi_n + 1))
    for k in range(count):
        if k and rng.random() >= back_to_back:
            add_unseen()
        if with_intro and rng.random() < intro_share:
            src = with_intro[int(rng.integers(len(with_intro)))]
            length = float(rng.uniform(lo_s, min(hi_s, src.intro_s)))
            offset = float(rng.uniform(0.0, src.intro_s - length))
            kind = "intro"
        else:
            src = sources[int(rng.integers(len(sources)))]
            length = float(rng.uniform(lo_s, hi_s))
            offset = float(rng.uniform(src.intro_s + 0.5, src.samples.size / sample_rate - length))
            kind = "excerpt"
        i = round(offset * sample_rate)
        add(kind, src.samples[i : i + round(length * sample_rate)], key=src.key,
            show=src.show, offset_s=i / sample_rate)  # fmt: skip
    add_unseen()
    return Recording(np.concatenate(pieces).astype(np.float32), sample_rate, tuple(parts))


def _faded(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """``x`` with its first and last FADE_S faded: the splices do not click."""
    y = np.asarray(x, dtype=np.float32).copy()
    n = min(round(FADE_S * sample_rate), y.size // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        y[:n] *= ramp
        y[-n:] *= ramp[::-1]
    return y
