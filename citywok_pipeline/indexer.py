"""Build or refresh a snapshot directory from a media tree (what `citywok index` runs).

Incremental: a season whose files are unchanged (same relative paths, sizes and mtimes) keeps
its shard; in a changed season only new or modified files are decoded, the others' hashes
are read back from the old shard. A file that fails to decode is reported, remembered (so
an unchanged bad file is not decoded again), and does not stop the others.

With a :class:`TranscriptSide` the shards also hold transcript segments and their vectors
(what the ``transcript`` and ``segment_embeddings`` assets make): new or changed files are
transcribed and embedded, unchanged ones keep the segments of the old shard (when it has
some of the same embedding model).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .files import file_sha256, remove_dead_temps
from .fingerprint.audio import DecodeError, decode
from .fingerprint.hashes import Hashes
from .fingerprint.matcher import fingerprint
from .fingerprint.params import DEFAULT_PARAMS, FingerprintParams
from .fingerprint.records import Episode
from .library import MediaFile, scan_media
from .snapshot.directory import shard_path, shard_paths
from .snapshot.segments import SegmentTable, needs_rebuild
from .snapshot.shard import CorruptShardError, SnapshotError, open_shard, write_shard

if TYPE_CHECKING:
    from .transcripts.embedder import Embedder
    from .transcripts.transcriber import Transcriber


# A media root that holds less than this share of the files the last build found is refused
# (without --allow-empty): a disk half unmounted, a network share half gone.
MIN_KEPT_FRACTION = 0.5


class MediaRootEmptiedError(Exception):
    """The media root lost all or most of its files since the last build; nothing changed."""


def _check_not_emptied(
    root: Path, out: Path, scan: Any, old: dict[str, Any], *, allow_empty: bool
) -> None:
    before = sum(
        len(s.episodes) + len(s.meta.get("extra", {}).get("failures", [])) for s in old.values()
    )
    now = len(scan.files)
    if allow_empty or before == 0 or now >= MIN_KEPT_FRACTION * before:
        return
    gone = sorted(season for season in old if season not in scan.seasons)
    raise MediaRootEmptiedError(
        f"{root}: holds {now} media file(s), but the last build of {out} found {before}"
        + (
            f" ({len(gone)} season(s) gone: {', '.join(gone[:5])}{', ...' if len(gone) > 5 else ''})"
            if gone
            else ""
        )
        + ": is a disk unmounted? Nothing was changed; pass --allow-empty to index it anyway "
        "(the shards of the seasons gone are deleted)"
    )


# Longer files are refused, not indexed: a decompression bomb (a FLAC of a few kB that decodes
# to days of silence) must not take a worker's memory (~115 MB of samples per hour).
DEFAULT_MAX_EPISODE_S = 6 * 3600.0
# Decoding one file gives up after this long (a 6-hour file decodes in about a minute).
DECODE_TIMEOUT_S = 600.0
# A file whose audio stops this much short of what its header declares is reported truncated.
TRUNCATED_SHORTFALL = (1.0, 0.02)  # seconds, and fraction of the declared duration


@dataclass(frozen=True)
class Processed:
    """One media file decoded and fingerprinted."""

    sha256: str
    duration_s: float
    hashes: Hashes
    declared_s: float | None = None  # what the container's header says, when it says

    @property
    def truncated(self) -> str | None:
        """Why the file looks cut short (its audio ends before its header says), else None."""
        if self.declared_s is None:
            return None
        margin = max(TRUNCATED_SHORTFALL[0], TRUNCATED_SHORTFALL[1] * self.declared_s)
        if self.duration_s >= self.declared_s - margin:
            return None
        return (
            f"truncated: its audio ends at {self.duration_s:.1f} s, its header says "
            f"{self.declared_s:.1f} s (an interrupted copy?); the {self.duration_s:.1f} s there "
            "are indexed"
        )


def declared_duration_s(path: str | os.PathLike[str]) -> float | None:
    """The duration a media file's header declares for its first audio stream (PyAV), or
    None when it declares none or cannot be read (the decoder then says why)."""
    import av

    try:
        with av.open(os.fspath(path)) as container:
            streams = container.streams.audio
            if not streams:
                return None
            stream = streams[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except (av.FFmpegError, OSError, ValueError):
        return None


def process_file(
    path: str | os.PathLike[str],
    params: FingerprintParams,
    *,
    max_episode_s: float = DEFAULT_MAX_EPISODE_S,
) -> Processed:
    """Decode a media file and fingerprint it (raises DecodeError for bad media, one longer
    than ``max_episode_s``, or one whose decoding takes longer than :data:`DECODE_TIMEOUT_S`)."""
    samples = decode(
        path,
        sample_rate=params.sample_rate,
        max_seconds=max_episode_s + 1,
        timeout_s=DECODE_TIMEOUT_S,
    )
    duration = samples.size / params.sample_rate
    if duration > max_episode_s:
        limit = f"{max_episode_s / 3600:g} h" if max_episode_s >= 3600 else f"{max_episode_s:.0f} s"
        raise DecodeError(
            str(path),
            f"decodes to more than {limit} of audio (a decompression bomb?): not indexed "
            "(raise --max-hours for longer episodes)",
        )
    return Processed(
        sha256=file_sha256(path),
        duration_s=duration,
        hashes=fingerprint(samples, params=params),
        declared_s=declared_duration_s(path),
    )


def _die_with_parent(parent: int) -> None:
    """In a pool worker: exit when the index that started it dies (a kill -9 gives the pool
    no chance to stop its workers, which would otherwise wait for work for ever)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _work(item: tuple[str, dict[str, Any], float]) -> tuple[str, Processed | str]:
    path, params, max_episode_s = item
    try:
        return path, process_file(
            path, FingerprintParams.from_dict(params), max_episode_s=max_episode_s
        )
    except DecodeError as exc:
        return path, str(exc)


@dataclass
class TranscriptSide:
    """How ``index`` builds the transcript side: models loaded on first use (an index that
    finds nothing new loads none).

    ``model_name`` is the embedding model's name as segments record it, known without loading
    the model: a season whose old segments came from another model is embedded again.
    """

    load_transcriber: Callable[[], Transcriber]
    load_embedder: Callable[[], Embedder]
    model_name: str
    quantization: str = "float16"
    _models: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def default(cls, *, embedding_model_path: str | None = None) -> TranscriptSide:
        """The CPU defaults: the packaged tiny.en and all-MiniLM-L6-v2 (or a model folder)."""
        from .transcripts.embedder import load_embedder, model_name_for
        from .transcripts.transcriber import load_transcriber

        return cls(
            load_transcriber=load_transcriber,
            load_embedder=lambda: load_embedder(embedding_model_path),
            model_name=model_name_for(embedding_model_path),
        )

    def segments(self, path: Path, *, episode: int) -> SegmentTable:
        """Transcribe and embed one media file (raises DecodeError or TranscriptError)."""
        from .transcripts.embeddings import embed_transcript
        from .transcripts.transcriber import SAMPLE_RATE

        if "transcriber" not in self._models:
            self._models["transcriber"] = self.load_transcriber()
            self._models["embedder"] = self.load_embedder()
        samples = decode(path, sample_rate=SAMPLE_RATE)
        transcript = self._models["transcriber"].transcribe(samples, label=str(path))
        e = embed_transcript(
            transcript,
            self._models["embedder"],
            episode_id=path.name,
            quantization=self.quantization,
        )
        return SegmentTable(
            np.full(len(e), episode, np.uint32), e.start, e.end, e.texts, e.vectors, e.model
        )


@dataclass
class IndexReport:
    seasons_built: list[str] = field(default_factory=list)
    seasons_unchanged: list[str] = field(default_factory=list)
    seasons_removed: list[str] = field(default_factory=list)
    decoded: int = 0
    reused: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Indexed, but their audio ends before their header says (reported as bad input).
    truncated: list[tuple[str, str]] = field(default_factory=list)
    transcribed: int = 0
    segments: int = 0
    # Segments in the library graph when this run rebuilt it (0: unchanged, or none needed).
    library_graph: int = 0


def _stat(mf: MediaFile) -> tuple[int, int]:
    st = mf.path.stat()
    return st.st_size, st.st_mtime_ns


def index_library(
    media_root: str | os.PathLike[str],
    snapshot_dir: str | os.PathLike[str],
    *,
    params: FingerprintParams = DEFAULT_PARAMS,
    jobs: int | None = None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    transcripts: TranscriptSide | None = None,
    transcript_progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    allow_empty: bool = False,
    max_episode_s: float = DEFAULT_MAX_EPISODE_S,
) -> IndexReport:
    """Index every season under ``media_root`` into one shard per season in ``snapshot_dir``.

    Old shards are verified before anything of theirs is reused (a damaged one is rebuilt
    from the media alone). A media root that lost all or most of the files of the last build
    (an unmounted disk, an emptied folder) is refused before anything is changed, unless
    ``allow_empty``.

    Parameters
    ----------
    jobs : int, optional
        Worker processes for decoding and fingerprinting (default: all cores).
    progress : callable, optional
        Wraps the iterator of finished files (``progress(iterable, total)``), e.g. a tqdm bar.
    transcripts : TranscriptSide, optional
        Also transcribe, embed and store segments; without it shards hold fingerprints only
        (and a season left unchanged keeps whatever segments it had).
    transcript_progress : callable, optional
        Like ``progress``, over the files being transcribed.
    allow_empty : bool
        Index even a media root that holds none or few of the files of the last build: the
        seasons gone from it lose their shards.
    max_episode_s : float
        Longer files are reported and not indexed (6 hours by default).

    Raises
    ------
    MediaRootEmptiedError
        The media root lost all or most of its files since the last build (nothing changed).
    FileNotFoundError
        The media root is not a directory.
    """
    started = time.perf_counter()
    root = Path(media_root).resolve()
    out = Path(snapshot_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Shards half written by an index or a step that was killed (their writers hold no lock).
    remove_dead_temps(out, ".*.lmdb.*.tmp")
    scan = scan_media(root)
    report = IndexReport(skipped=list(scan.skipped))

    old: dict[str, Any] = {}
    damaged: list[Path] = []
    for p in shard_paths(out):
        try:
            shard = open_shard(p)
        except CorruptShardError as exc:
            damaged.append(p)
            report.failures.append((p.name, f"damaged shard is rebuilt from the media: {exc}"))
            continue
        except SnapshotError as exc:
            report.failures.append((p.name, f"unreadable shard is rebuilt: {exc}"))
            continue
        if shard.meta.get("extra", {}).get("media_root") != str(root):
            shard.close()
            continue
        old[shard.season] = shard
    try:
        _check_not_emptied(root, out, scan, old, allow_empty=allow_empty)
        # Only a shard that verifies (every checksum, every count) lends its hashes and
        # segments to the rebuild: a damaged one is rebuilt from the media alone.
        for season, shard in list(old.items()):
            problems = shard.verify()
            if problems:
                shard.close()
                del old[season]
                damaged.append(shard.path)
                report.failures.append(
                    (shard.path.name, f"damaged shard is rebuilt from the media: {problems[0]}")
                )
    except BaseException:
        for shard in old.values():
            shard.close()
        raise

    plans: dict[str, dict[str, Any]] = {}
    todo: list[MediaFile] = []
    for season, files in scan.seasons.items():
        shard = old.get(season)
        same_params = shard is not None and shard.params == params
        prev = {e.source: (i, e) for i, e in enumerate(shard.episodes)} if same_params else {}
        prev_fail = {
            f["source"]: f for f in (shard.meta["extra"].get("failures", []) if same_params else [])
        }
        prev_truncated = {
            f["source"]: f
            for f in (shard.meta["extra"].get("truncated", []) if same_params else [])
        }
        plan: dict[str, Any] = {
            "files": files, "reuse": {}, "failed": {}, "decode": [], "truncated": {},
        }  # fmt: skip
        for mf in files:
            size, mtime = _stat(mf)
            hit = prev.get(mf.source)
            fail = prev_fail.get(mf.source)
            if (
                hit
                and hit[1].size == size
                and hit[1].mtime_ns == mtime
                and hit[1].episode_id == mf.episode_id
            ):
                plan["reuse"][mf.source] = hit
                cut = prev_truncated.get(mf.source)
                if cut and cut["size"] == size and cut["mtime_ns"] == mtime:
                    plan["truncated"][mf.source] = cut
            elif fail and fail["size"] == size and fail["mtime_ns"] == mtime:
                plan["failed"][mf.source] = fail["reason"]
            else:
                plan["decode"].append(mf)
        old_segments = shard.segments if same_params else None
        plan["old_segments"] = (
            old_segments
            if transcripts is not None
            and old_segments is not None
            and old_segments.model == transcripts.model_name
            else None
        )
        unchanged = (
            same_params
            and not plan["decode"]
            and len(plan["reuse"]) == len(shard.episodes)
            and set(plan["failed"]) == set(prev_fail)
            and (transcripts is None or plan["old_segments"] is not None)
            # Segments of an older format (no ANN graph) are carried into a rewritten shard.
            and not needs_rebuild(shard.meta.get("segments"))
        )
        if unchanged:
            report.seasons_unchanged.append(season)
            report.failures.extend((s, r) for s, r in plan["failed"].items())
            report.truncated.extend((s, t["reason"]) for s, t in plan["truncated"].items())
            continue
        plans[season] = plan
        todo.extend(plan["decode"])

    results: dict[str, Processed | str] = {}
    items = [(str(mf.path), params.to_dict(), max_episode_s) for mf in todo]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(items)))
    if items:
        if workers == 1:
            it: Iterable[tuple[str, Processed | str]] = map(_work, items)
            pool = None
        else:
            pool = ProcessPoolExecutor(
                max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),)
            )
            it = pool.map(_work, items, chunksize=1)
        try:
            for path, res in progress(it, len(items)) if progress else it:
                results[path] = res
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    # The transcript side: every file that goes into a shard and has no segments to carry over.
    spoken: dict[str, SegmentTable | str] = {}
    if transcripts is not None:
        todo_t = [
            mf
            for plan in plans.values()
            for mf in plan["files"]
            if mf.source not in plan["failed"]
            and not (mf.source in plan["reuse"] and plan["old_segments"] is not None)
            and (mf.source in plan["reuse"] or isinstance(results.get(str(mf.path)), Processed))
        ]
        it_t: Iterable[MediaFile] = (
            transcript_progress(todo_t, len(todo_t)) if transcript_progress else todo_t
        )
        for mf in it_t:
            spoken[mf.source] = _transcribe(transcripts, mf)

    for season, plan in plans.items():
        shard = old.get(season)
        episodes: list[Episode] = []
        hashes: list[Hashes] = []
        failures: list[dict[str, Any]] = []
        truncated: list[dict[str, Any]] = []
        tables: list[SegmentTable] = []
        for mf in plan["files"]:
            size, mtime = _stat(mf)
            if mf.source in plan["reuse"]:
                i, e = plan["reuse"][mf.source]
                if plan["old_segments"] is not None:
                    old_rows = plan["old_segments"].rows_of_episode(i)
                    tables.append(plan["old_segments"].table(old_rows, episode=len(episodes)))
                elif transcripts is not None:
                    _add_spoken(report, tables, spoken, mf, len(episodes))
                episodes.append(e)
                hashes.append(shard.postings.episode_hashes(i))
                if mf.source in plan["truncated"]:
                    truncated.append(plan["truncated"][mf.source])
                    report.truncated.append((mf.source, plan["truncated"][mf.source]["reason"]))
                report.reused += 1
                report.audio_s += e.duration_s
                continue
            if mf.source in plan["failed"]:
                reason = plan["failed"][mf.source]
            else:
                res = results[str(mf.path)]
                if isinstance(res, Processed):
                    report.decoded += 1
                    report.audio_s += res.duration_s
                    if transcripts is not None:
                        _add_spoken(report, tables, spoken, mf, len(episodes))
                    episodes.append(
                        Episode(
                            episode_id=mf.episode_id,
                            season=season,
                            show=mf.show,
                            season_number=mf.season_number,
                            episode_number=mf.episode_number,
                            source=mf.source,
                            title=mf.title,
                            duration_s=round(res.duration_s, 3),
                            sha256=res.sha256,
                            size=size,
                            mtime_ns=mtime,
                        )
                    )
                    hashes.append(res.hashes)
                    if res.truncated:
                        report.truncated.append((mf.source, res.truncated))
                        truncated.append({"source": mf.source, "size": size, "mtime_ns": mtime,
                                          "reason": res.truncated})  # fmt: skip
                    continue
                reason = res
            report.failures.append((mf.source, reason))
            failures.append(
                {"source": mf.source, "size": size, "mtime_ns": mtime, "reason": reason}
            )
        extra = {"media_root": str(root), "failures": failures, "truncated": truncated}
        segments = None
        if transcripts is not None:
            dim = next((t.dim for t in tables), 0) or _embedder_dim(transcripts)
            segments = SegmentTable.concat(tables, model=transcripts.model_name, dim=dim)
            report.segments += len(segments)
        write_shard(
            shard_path(out, season),
            season=season,
            episodes=episodes,
            hashes=hashes,
            params=params,
            extra=extra,
            segments=segments,
        )
        report.seasons_built.append(season)

    for season, shard in old.items():
        shard.close()
        if season not in scan.seasons:
            shard_path(out, season).unlink(missing_ok=True)
            report.seasons_removed.append(season)
    for p in damaged:
        if p.stem not in scan.seasons:
            p.unlink(missing_ok=True)
            report.seasons_removed.append(p.stem)
    if transcripts is not None or report.seasons_built or report.seasons_removed:
        from .snapshot.library_graph import refresh_library_graph

        report.library_graph = refresh_library_graph(out)
    report.elapsed_s = time.perf_counter() - started
    return report


def _transcribe(side: TranscriptSide, mf: MediaFile) -> SegmentTable | str:
    """A file's segments (episode index 0, set when it joins its shard), or why there are none."""
    from .transcripts.errors import TranscriptError

    try:
        return side.segments(mf.path, episode=0)
    except (DecodeError, TranscriptError) as exc:
        return f"cannot transcribe: {exc}"


def _add_spoken(
    report: IndexReport,
    tables: list[SegmentTable],
    spoken: dict[str, SegmentTable | str],
    mf: MediaFile,
    episode: int,
) -> None:
    got = spoken[mf.source]
    if isinstance(got, str):
        report.failures.append((mf.source, got))
        return
    report.transcribed += 1
    tables.append(
        SegmentTable(
            np.full(len(got), episode, np.uint32),
            got.start,
            got.end,
            got.texts,
            got.vectors,
            got.model,
        )
    )


def _embedder_dim(side: TranscriptSide) -> int:
    """The vector length, for a season with no speech at all (loads the embedder)."""
    if "embedder" not in side._models:
        side._models["embedder"] = side.load_embedder()
    return int(side._models["embedder"].dim)
