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
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .files import file_sha256
from .fingerprint.audio import DecodeError, decode
from .fingerprint.hashes import Hashes
from .fingerprint.matcher import fingerprint
from .fingerprint.params import DEFAULT_PARAMS, FingerprintParams
from .fingerprint.records import Episode
from .library import MediaFile, scan_media
from .snapshot.directory import shard_path, shard_paths
from .snapshot.segments import SegmentTable
from .snapshot.shard import SnapshotError, open_shard, write_shard

if TYPE_CHECKING:
    from .transcripts.embedder import Embedder
    from .transcripts.transcriber import Transcriber


@dataclass(frozen=True)
class Processed:
    """One media file decoded and fingerprinted."""

    sha256: str
    duration_s: float
    hashes: Hashes


def process_file(path: str | os.PathLike[str], params: FingerprintParams) -> Processed:
    """Decode a media file and fingerprint it (raises DecodeError for bad media)."""
    samples = decode(path, sample_rate=params.sample_rate)
    return Processed(
        sha256=file_sha256(path),
        duration_s=samples.size / params.sample_rate,
        hashes=fingerprint(samples, params=params),
    )


def _work(item: tuple[str, dict[str, Any]]) -> tuple[str, Processed | str]:
    path, params = item
    try:
        return path, process_file(path, FingerprintParams.from_dict(params))
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
    transcribed: int = 0
    segments: int = 0


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
) -> IndexReport:
    """Index every season under ``media_root`` into one shard per season in ``snapshot_dir``.

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
    """
    started = time.perf_counter()
    root = Path(media_root).resolve()
    out = Path(snapshot_dir)
    out.mkdir(parents=True, exist_ok=True)
    scan = scan_media(root)
    report = IndexReport(skipped=list(scan.skipped))

    old: dict[str, Any] = {}
    for p in shard_paths(out):
        try:
            shard = open_shard(p)
        except SnapshotError as exc:
            report.failures.append((p.name, f"unreadable shard is rebuilt: {exc}"))
            continue
        if shard.meta.get("extra", {}).get("media_root") != str(root):
            shard.close()
            continue
        old[shard.season] = shard

    plans: dict[str, dict[str, Any]] = {}
    todo: list[MediaFile] = []
    for season, files in scan.seasons.items():
        shard = old.get(season)
        same_params = shard is not None and shard.params == params
        prev = {e.source: (i, e) for i, e in enumerate(shard.episodes)} if same_params else {}
        prev_fail = {
            f["source"]: f for f in (shard.meta["extra"].get("failures", []) if same_params else [])
        }
        plan: dict[str, Any] = {"files": files, "reuse": {}, "failed": {}, "decode": []}
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
        )
        if unchanged:
            report.seasons_unchanged.append(season)
            report.failures.extend((s, r) for s, r in plan["failed"].items())
            continue
        plans[season] = plan
        todo.extend(plan["decode"])

    results: dict[str, Processed | str] = {}
    items = [(str(mf.path), params.to_dict()) for mf in todo]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(items)))
    if items:
        if workers == 1:
            it: Iterable[tuple[str, Processed | str]] = map(_work, items)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
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
                    continue
                reason = res
            report.failures.append((mf.source, reason))
            failures.append(
                {"source": mf.source, "size": size, "mtime_ns": mtime, "reason": reason}
            )
        extra = {"media_root": str(root), "failures": failures}
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
