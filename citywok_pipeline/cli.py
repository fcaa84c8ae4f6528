"""`citywok`: thin commands over the core and the pipeline.

Exit codes: 0 success; 1 a check failed (``verify``); 2 bad input (a file that is not
audio, a missing snapshot, bad arguments), after doing everything that could be done; 3 a
stream given to ``match --segments`` stalled or broke off (its segments so far were printed);
4 ``match --by-words`` had a clip its audio did not match and in which nothing is said (its
answer, with the note "no speech in the clip", was printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

# Nothing heavy at the top: a one-shot command imports only what it runs
# (tests/cli/test_imports.py keeps torch, sentence-transformers and Dagster out of match and
# search).

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STREAM_ENDED = 3
EXIT_NO_SPEECH = 4
DEFAULT_MAX_CLIP_S = 120.0
DEFAULT_MAX_RECORDING_S = 4 * 3600.0


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"citywok: error: {message}", err=True)
    sys.exit(code)


def _open_snapshot(snapshot_dir: str):  # type: ignore[no-untyped-def]
    from .files import resolve_snapshot_dir
    from .snapshot import Snapshot, SnapshotError

    try:
        # A pull directory is read through DIR/current; a plain one as it is.
        return Snapshot.open(resolve_snapshot_dir(snapshot_dir))
    except SnapshotError as exc:
        _fail(str(exc))


def _report_refused(snap: Any) -> bool:
    """Say which shards were refused (a failed checksum...); True when there were any."""
    refused = snap.refused()
    for reason in refused.values():
        click.echo(f"citywok: error: {reason} (the other shards answered)", err=True)
    return bool(refused)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="citywok-pipeline")
def main() -> None:
    """CityWok: index TV episodes and find which one a clip comes from, and when."""


@main.command()
@click.argument("media_root", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--snapshot",
    "snapshot_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Snapshot directory to create or refresh (one LMDB shard per season).",
)
@click.option(
    "--fingerprints-only",
    is_flag=True,
    help="Skip the transcript side (transcripts, embeddings, segments).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes for decoding and fingerprinting [default: all cores].",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--allow-empty", is_flag=True,
    help="Index even when MEDIA_ROOT lost all or most of the files of the last build (an "
    "unmounted disk is refused by default); the shards of the seasons gone are deleted.",
)  # fmt: skip
@click.option(
    "--max-hours", type=click.FloatRange(min=0, min_open=True), default=6.0, show_default=True,
    help="Longer files are reported and not indexed (a small file that decodes to days of "
    "audio is a decompression bomb).",
)  # fmt: skip
def index(
    media_root: Path,
    snapshot_dir: Path,
    fingerprints_only: bool,
    jobs: int | None,
    quiet: bool,
    allow_empty: bool,
    max_hours: float,
) -> None:
    """Index MEDIA_ROOT/<show>/<season folder>/<files> into a snapshot.

    Season numbers come from folder names like 'Season 1', 'Season 01' or 'S01'; episode
    numbers from 'S01E03'-style file names, else from file order. Any container ffmpeg
    reads works. Re-running on the same snapshot only processes what changed. Files that
    cannot be decoded are reported (exit code 2) and the rest is indexed. A MEDIA_ROOT that
    lost all or most of its files since the last build is refused (exit 2, nothing changed)
    unless --allow-empty.
    """
    from tqdm import tqdm

    from .fingerprint.params import DEFAULT_PARAMS
    from .indexer import MediaRootEmptiedError, TranscriptSide, index_library

    if not media_root.is_dir():
        _fail(f"{media_root}: media root is not a directory")
    _check_library_graph_setting()

    def bar(desc: str):  # type: ignore[no-untyped-def]
        def wrap(it, total):  # type: ignore[no-untyped-def]
            return tqdm(
                it,
                total=total,
                unit="file",
                desc=desc,
                file=sys.stderr,
                disable=quiet,
                dynamic_ncols=True,
            )

        return wrap

    # The same models as the Dagster resources' defaults (and the same variable for the
    # embedding model, which a search must use too).
    transcripts = (
        None
        if fingerprints_only
        else TranscriptSide.default(
            embedding_model_path=os.environ.get("CITYWOK_EMBEDDING_MODEL_PATH") or None
        )
    )
    try:
        report = index_library(
            media_root,
            snapshot_dir,
            params=DEFAULT_PARAMS,
            jobs=jobs,
            progress=bar("fingerprinting"),
            transcripts=transcripts,
            transcript_progress=bar("transcribing"),
            allow_empty=allow_empty,
            max_episode_s=max_hours * 3600,
        )
    except (MediaRootEmptiedError, FileNotFoundError) as exc:
        _fail(str(exc))
    for source, reason in report.skipped:
        click.echo(f"citywok: skipped {source}: {reason}", err=True)
    for source, reason in [*report.failures, *report.truncated]:
        click.echo(
            f"citywok: error: {reason}"
            if source in reason
            else f"citywok: error: {source}: {reason}",
            err=True,
        )
    speed = report.audio_s / report.elapsed_s if report.elapsed_s and report.decoded else 0
    click.echo(
        f"indexed {media_root} into {snapshot_dir}: {len(report.seasons_built)} season(s) built, "
        f"{len(report.seasons_unchanged)} unchanged, {len(report.seasons_removed)} removed; "
        f"{report.decoded} file(s) fingerprinted, {report.reused} reused, {len(report.failures)} failed"
        + (f"; {speed:.0f}x realtime" if speed else "")
        + (
            f"; {report.transcribed} transcribed, {report.segments} segment(s) in rebuilt seasons"
            if transcripts is not None
            else ""
        )
        + (
            f"; library graph of {report.library_graph} segments rebuilt"
            if report.library_graph
            else ""
        ),
        err=True,
    )
    if report.failures or report.truncated:
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
@click.argument("clips", nargs=-1, required=True)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per clip per line on stdout."
)
@click.option(
    "--max-clip", "max_clip_s", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Seconds of each clip that are decoded and matched (the first) [default: 120; with "
    "--segments 14400 (4 h), past which a recording is cut with a warning].",
)  # fmt: skip
@click.option(
    "--decode-timeout", "decode_timeout_s", type=click.FloatRange(min=0, min_open=True),
    default=60.0, show_default=True,
    help="Give up decoding a clip after this many seconds of wall-clock time (exit 2; not "
    "with --segments, which decodes as it matches).",
)  # fmt: skip
@click.option(
    "--segments", is_flag=True,
    help="Treat each input as a long recording (a compilation, a broadcast, a live stream): "
    "say which stretches of it come from which episode.",
)  # fmt: skip
@click.option(
    "--follow/--no-follow", default=None,
    help="With --segments: print each segment as soon as it is settled [default: for '-' and "
    "http(s) streams].",
)  # fmt: skip
@click.option(
    "--stall-timeout", "stall_timeout_s", type=click.FloatRange(min=0, min_open=True),
    default=30.0, show_default=True,
    help="With --segments: end a stream that sends no audio for this many seconds (exit 3).",
)  # fmt: skip
@click.option(
    "--by-words", is_flag=True,
    help="A clip the audio does not match is identified by what is said: transcribed (the "
    "packaged model, its first 30 s) and found in the transcripts; those answers carry "
    '"method": "words". A clip with no speech: "no speech in the clip" (exit 4).',
)  # fmt: skip
def match(
    snapshot_dir: Path,
    clips: tuple[str, ...],
    as_json: bool,
    max_clip_s: float | None,
    decode_timeout_s: float,
    segments: bool,
    follow: bool | None,
    stall_timeout_s: float,
    by_words: bool,
) -> None:
    """Say which episode each CLIP comes from, and at what second.

    A clip is a file or URL in any format ffmpeg reads ('-' reads standard input). With
    --json: {"query", "ambiguous", "matches": [{"episode_id", "source", "season",
    "offset_s", "score", "confidence"}, ...]}, best first, empty when the clip is not in
    the library; ambiguous is true when the audio is shared by several episodes. Only the
    first --max-clip seconds of a clip are decoded, within --decode-timeout seconds. A shard
    that fails its checksums is refused (named on stderr, exit 1) and the others answer.

    With --segments each input is a long recording, read as it arrives (a file, '-', or an
    http(s) stream: HLS, Icecast, a file served slowly), and --json prints one object per
    input: {"query", "duration_s", "segments": [{"episode_id", "source", "season",
    "start_s", "end_s", "offset_s", "confidence", "speed", "ambiguous"}, ...], "ended"};
    start_s and end_s are in the recording, offset_s is the episode's second at start_s,
    and audio in no episode gives no segment. With --follow each segment is also printed as
    {"query", "segment": {...}} as soon as it is settled. A stream that stalls or breaks off
    ends with the segments so far, "ended": "stalled" or "error" and a "reason" (exit 3).

    With --by-words a clip the audio finds nothing for (its music replaced, a re-mixed
    upload) is transcribed and looked for in the transcripts by its words: "method" is then
    "words" and offset_s the episode second of the clip's start, from the word times.
    """
    if segments and by_words:
        _fail("--by-words identifies clips; it does not go with --segments")
    if segments:
        _match_segments(
            snapshot_dir, clips, as_json=as_json, follow=follow, stall_timeout_s=stall_timeout_s,
            max_s=DEFAULT_MAX_RECORDING_S if max_clip_s is None else max_clip_s,
        )  # fmt: skip
        return
    from .fingerprint.audio import DecodeError, decode
    from .fingerprint.matcher import match_samples

    max_clip_s = DEFAULT_MAX_CLIP_S if max_clip_s is None else max_clip_s
    snap = _open_snapshot(str(snapshot_dir))
    failed = no_speech = False
    words: Any = None
    with snap:
        for clip in clips:
            try:
                source: Any = sys.stdin.buffer if clip == "-" else clip
                if by_words and clip == "-":
                    source = sys.stdin.buffer.read()  # read twice: for each sample rate
                samples = decode(
                    source,
                    sample_rate=snap.params.sample_rate,
                    label="<stdin>" if clip == "-" else None,
                    max_seconds=max_clip_s,
                    timeout_s=decode_timeout_s,
                )
            except DecodeError as exc:
                click.echo(f"citywok: error: {exc}", err=True)
                failed = True
                continue
            result = match_samples(samples, snap)
            if by_words and not result.matches:
                from .transcripts.identify import NO_SPEECH, WordsIdentifier

                words = words or WordsIdentifier(snap)
                try:
                    result = _match_by_words(words, source, clip, max_clip_s, decode_timeout_s)
                except DecodeError as exc:
                    click.echo(f"citywok: error: {exc}", err=True)
                    failed = True
                    continue
                no_speech = no_speech or result.note == NO_SPEECH
            if as_json:
                click.echo(json.dumps(result.to_dict(clip)))
            elif not result.matches:
                click.echo(f"{clip}: no match" + (f" ({result.note})" if result.note else ""))
            else:
                label = "shared by" if result.ambiguous else "matches"
                click.echo(f"{clip}: {label}" + (" (by words)" if result.method == "words" else ""))
                for m in result.matches:
                    click.echo(
                        f"  {m.episode_id}  at {m.offset_s:8.2f} s  score {m.score:4d}  "
                        f"confidence {m.confidence:.2f}  ({m.source})"
                    )
        refused = _report_refused(snap)
    if failed:
        sys.exit(EXIT_BAD_INPUT)
    if refused:
        sys.exit(EXIT_CHECK_FAILED)
    if no_speech:
        sys.exit(EXIT_NO_SPEECH)


def _match_by_words(words: Any, source: Any, clip: str, max_clip_s: float, timeout_s: float) -> Any:
    """`match --by-words` for a clip its audio did not match: decoded again at the
    transcriber's rate (the fingerprint's is lower) and identified by what is said."""
    from .fingerprint.audio import decode
    from .transcripts.identify import MAX_WORDS_S
    from .transcripts.transcriber import SAMPLE_RATE

    samples = decode(
        source,
        sample_rate=SAMPLE_RATE,
        label="<stdin>" if clip == "-" else None,
        max_seconds=min(max_clip_s, MAX_WORDS_S),
        timeout_s=timeout_s,
    )
    return words.identify(samples, label=clip)


def _match_segments(
    snapshot_dir: Path,
    inputs: tuple[str, ...],
    *,
    as_json: bool,
    follow: bool | None,
    stall_timeout_s: float,
    max_s: float,
) -> None:
    """`match --segments`: each input segmented as it is decoded (see `match`)."""
    from tqdm import tqdm

    from .fingerprint.audio import DecodeError, StreamStalled, decode_stream
    from .fingerprint.recording import Segment, Segmenter

    snap = _open_snapshot(str(snapshot_dir))
    bad_input = ended_early = False
    with snap:
        for name in inputs:
            live = name == "-" or name[:8].lower().startswith(("http://", "https://"))
            each = live if follow is None else follow

            def show(segment: Segment, name: str = name, each: bool = each) -> None:
                if as_json and each:
                    click.echo(json.dumps({"query": name, "segment": segment.to_dict()}))
                elif not as_json:
                    click.echo(f"{name}: {_describe_segment(segment)}")

            stream = decode_stream(
                sys.stdin.buffer if name == "-" else name,
                sample_rate=snap.params.sample_rate,
                label="<stdin>" if name == "-" else None,
                max_seconds=max_s,
                stall_timeout_s=stall_timeout_s,
            )
            segmenter = Segmenter(snap)
            ended, reason = "end", ""
            bar = tqdm(
                desc=name, unit="s", file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty(), bar_format="{desc}: {n:.0f} s of audio",
            )  # fmt: skip
            try:
                with stream, bar:
                    for chunk in stream:
                        for segment in segmenter.feed(chunk):
                            show(segment)
                        bar.update(chunk.size / snap.params.sample_rate)
            except StreamStalled as exc:
                ended, reason = "stalled", exc.reason
            except DecodeError as exc:
                if not stream.samples:
                    click.echo(f"citywok: error: {exc}", err=True)
                    bad_input = True
                    continue
                ended, reason = "error", exc.reason
            for segment in segmenter.finish():
                show(segment)
            warnings: tuple[str, ...] = ()
            if stream.truncated:
                warnings = (
                    f"cut at {max_s:g} s (--max-clip): the rest of the recording was not read",
                )
                click.echo(f"citywok: warning: {name}: {warnings[0]}", err=True)
            result = segmenter.result(ended=ended, reason=reason, warnings=warnings)
            if as_json:
                click.echo(json.dumps(result.to_dict(name)))
            else:
                click.echo(
                    f"{name}: {len(result.segments)} segment(s) in {result.duration_s:.1f} s"
                )
            if ended != "end":
                click.echo(
                    f"citywok: error: {name}: {reason}; the segments before were printed",
                    err=True,
                )
                ended_early = True
    if bad_input:
        sys.exit(EXIT_BAD_INPUT)
    if ended_early:
        sys.exit(EXIT_STREAM_ENDED)


def _describe_segment(s: Any) -> str:
    span = f"{s.start_s:8.2f} - {s.end_s:8.2f} s"
    if s.ambiguous:
        names = ", ".join(m.episode_id for m in s.matches)
        return f"{span}  shared by {names} (at {s.offset_s:.2f} s)"
    return (
        f"{span}  {s.episode_id} at {s.offset_s:.2f} s  confidence {s.confidence:.2f}  ({s.source})"
    )


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[SNAPSHOT_DIR] TEXT")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per segment per line.")
@click.option(
    "--limit", "-n", type=click.IntRange(min=1, max=1000), default=10, show_default=True,
    help="At most this many segments.",
)  # fmt: skip
@click.option(
    "--keyword", "-k", "keywords", multiple=True,
    help="Only segments holding this word or phrase (whole words, any case); repeatable.",
)  # fmt: skip
@click.option(
    "--database", metavar="URL", envvar="CITYWOK_DATABASE_URL", default=None,
    help="Search the transcript database (Postgres with pgvector) instead of a snapshot "
    "[env CITYWOK_DATABASE_URL].",
)  # fmt: skip
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path),
    envvar="CITYWOK_EMBEDDING_MODEL_PATH", default=None,
    help="The sentence-transformers folder the segments were embedded with "
    "[env CITYWOK_EMBEDDING_MODEL_PATH; default: the packaged all-MiniLM-L6-v2].",
)  # fmt: skip
@click.option(
    "--exact", is_flag=True, help="Score every segment's vector (no ANN graph): slow, exact."
)
@click.option(
    "--mode", type=click.Choice(["hybrid", "semantic", "keyword"]), default=None,
    help="hybrid: meaning and words fused (the default); semantic: meaning alone (the "
    "embedding); keyword: words alone (BM25, no model loaded). The database ranks by meaning.",
)  # fmt: skip
def search(
    args: tuple[str, ...],
    as_json: bool,
    limit: int,
    keywords: tuple[str, ...],
    database: str | None,
    model_path: Path | None,
    exact: bool,
    mode: str | None,
) -> None:
    """Find where something is said: transcript segments best for TEXT, best first.

    Searches the snapshot in SNAPSHOT_DIR (by meaning and words, fused: see --mode), or with
    --database the transcript database by meaning (then give TEXT alone; at most 1,000
    characters). With --json: {"episode_id", "source", "start_s", "end_s", "text", "score"}
    per line: score is the ranking's (hybrid: the fused score, with "cosine" and, where the
    words matched, "bm25" beside it; semantic: the cosine similarity; keyword: BM25).
    """
    from .snapshot import SnapshotError
    from .transcripts.embedder import load_query_embedder
    from .transcripts.errors import TranscriptError
    from .transcripts.search import DEFAULT_MODE, check_query

    # A URL from CITYWOK_DATABASE_URL (set for the pipeline) yields to an explicit DIR; one
    # given as --database with a DIR as well is a usage error.
    source = click.get_current_context().get_parameter_source("database")
    if database and len(args) == 2 and source == click.core.ParameterSource.ENVIRONMENT:
        database = None
    # SNAPSHOT_DIR TEXT searches the snapshot, even when CITYWOK_DATABASE_URL is set for the
    # pipeline; TEXT alone searches the database.
    given = click.get_current_context().get_parameter_source("database")
    if len(args) == 2 and given is click.core.ParameterSource.COMMANDLINE:
        _fail("give TEXT alone with --database")
    if len(args) == 2:
        database = None
    elif len(args) != 1 or not database:
        _fail("give SNAPSHOT_DIR and TEXT (or --database URL and TEXT)")
    text = args[-1]
    try:
        check_query(text)
    except TranscriptError as exc:
        _fail(str(exc))
    if database and mode not in (None, "semantic"):
        _fail(f"--mode {mode} searches a snapshot; the database ranks by meaning alone")
    refused = False
    snap = None if database else _open_snapshot(args[0])
    try:
        if database:
            from .transcripts.postgres import connect, search_text

            with connect(database) as conn:  # an unreachable database fails before the model loads
                hits = search_text(
                    conn,
                    text,
                    embedder=load_query_embedder(model_path),
                    limit=limit,
                    keyword=list(keywords) or None,
                )
        else:
            mode = mode or DEFAULT_MODE
            # Words alone need no model.
            embedder = None if mode == "keyword" else load_query_embedder(model_path)
            from .transcripts.search import SegmentSearcher

            with snap:
                if not snap.n_segments:
                    click.echo(
                        f"citywok: {args[0]} holds no transcript segments "
                        "(built with --fingerprints-only?)",
                        err=True,
                    )
                searcher = SegmentSearcher(snap, embedder)
                for note in searcher.notes:
                    click.echo(f"citywok: {note}", err=True)
                hits = searcher.search(text, limit=limit, keywords=keywords, exact=exact, mode=mode)
                refused = _report_refused(snap)
    except (TranscriptError, SnapshotError) as exc:
        _fail(str(exc))
    for hit in hits:
        if as_json:
            click.echo(json.dumps(hit.to_dict(), ensure_ascii=False))
        else:
            click.echo(
                f"{hit.score:6.3f}  {hit.episode_id}  {hit.start_s:8.2f}-{hit.end_s:.2f} s  "
                f"{hit.text}  ({hit.source})"
            )
    if not hits and not as_json:
        click.echo("no segments found", err=True)
    if not database and refused:
        sys.exit(EXIT_CHECK_FAILED)


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
def info(snapshot_dir: Path, as_json: bool) -> None:
    """Show a snapshot's shards, counts, sizes and fingerprint params."""
    snap = _open_snapshot(str(snapshot_dir))
    with snap:
        data = snap.info()
        refused = _report_refused(snap)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        sys.exit(EXIT_CHECK_FAILED if refused else 0)
    click.echo(
        f"snapshot {data['path']}: {len(data['shards'])} shard(s), {data['episodes']} episode(s), "
        f"{data['hours']} h of audio, {data['postings']} postings, "
        f"{data['segments']} transcript segments, {data['bytes']} bytes"
        + (f" ({data['bytes_per_hour'] / 1e6:.2f} MB/hour)" if data["bytes_per_hour"] else "")
    )
    for s in data["shards"]:
        click.echo(
            f"  {s['season']:<24} {s['episodes']:4d} episode(s) {s['hours']:8.3f} h "
            f"{s['postings']:10d} postings {s['segments']:8d} segments {s['bytes']:12d} bytes  "
            f"built {s['built_at']}"
        )
    click.echo("params: " + json.dumps(data["params"], sort_keys=True))
    if refused:
        sys.exit(EXIT_CHECK_FAILED)


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
def verify(snapshot_dir: Path) -> None:
    """Check every shard's consistency and checksums, and the library graph if there is one;
    exit 1 if anything is wrong. A pull directory (``citywok pull --to DIR``) is checked
    through DIR/current."""
    from .files import resolve_snapshot_dir
    from .snapshot import Snapshot, shard_paths, verify_snapshot
    from .snapshot.library_graph import verify_library_graph

    # Nothing to check is bad input (exit 2), not a failed check.
    if not snapshot_dir.is_dir():
        _fail(f"{snapshot_dir}: no such snapshot directory")
    # A pull directory is checked through DIR/current (the version in use), as it is read.
    directory = resolve_snapshot_dir(snapshot_dir)
    if not shard_paths(directory):
        _fail(f"{snapshot_dir}: no shards here; build one with `citywok index`")
    problems = verify_snapshot(directory)
    if not problems:
        with Snapshot.open(directory) as snap:
            problems = verify_library_graph(snap)
    for p in problems:
        click.echo(f"citywok: {p}", err=True)
    if problems:
        sys.exit(EXIT_CHECK_FAILED)
    click.echo(f"{snapshot_dir}: ok")


def _bucket(url: str):  # type: ignore[no-untyped-def]
    from .blobstore import BlobStoreError, open_store

    try:
        return open_store(url)
    except BlobStoreError as exc:
        _fail(str(exc))


@contextlib.contextmanager
def _bucket_errors(url: str) -> Iterator[None]:
    """S3 failures (unreachable endpoint, bad keys, no bucket) as one clear line, exit 2."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .publishing import ManifestError

    try:
        yield
    except (BotoCoreError, ClientError, ManifestError) as exc:
        _fail(f"{url}: {exc}")


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
@click.argument("bucket_url")
def publish(snapshot_dir: Path, bucket_url: str) -> None:
    """Publish SNAPSHOT_DIR to BUCKET_URL as a new version; print the version id last.

    BUCKET_URL is file:///path or s3://bucket/prefix (endpoint and keys from
    CITYWOK_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Only shards the
    bucket lacks are uploaded; latest.json moves last. Publishing an unchanged snapshot
    prints the latest version again. Exit 1 when another publisher moved latest first.
    """
    from .publishing import (
        PublishConflictError,
        PublishError,
        publish_snapshot,
        resolve_snapshot_dir,
    )

    bucket = _bucket(bucket_url)
    try:
        with _bucket_errors(bucket_url):
            result = publish_snapshot(resolve_snapshot_dir(snapshot_dir), bucket)
    except PublishConflictError as exc:
        _fail(str(exc), EXIT_CHECK_FAILED)
    except PublishError as exc:
        _fail(str(exc))
    click.echo(
        f"published {result.version}: {len(result.uploaded)} shard(s) uploaded, "
        f"{len(result.reused)} already there"
        if result.created
        else f"unchanged: {snapshot_dir} is already {result.version}",
        err=True,
    )
    click.echo(result.version)


@main.command()
@click.argument("bucket_url")
@click.option(
    "--to",
    "pull_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Local directory: versions side by side, DIR/current the one in use.",
)
@click.option("--version", "version", default=None, help="Version id [default: latest].")
@click.option(
    "--keep", type=click.IntRange(min=1), default=3, show_default=True,
    help="Local versions kept (older ones and their unshared shards are deleted).",
)  # fmt: skip
def pull(bucket_url: str, pull_dir: Path, version: str | None, keep: int) -> None:
    """Fetch a published version into DIR and switch DIR/current to it; print its id last.

    Only missing shards are downloaded; every one is checked against the manifest's sha256.
    A corrupted or truncated download is rejected (exit 1) and the previous version stays.
    """
    from .publishing import IntegrityError, PullError, pull_version

    _check_library_graph_setting()
    bucket = _bucket(bucket_url)
    try:
        with _bucket_errors(bucket_url):
            result = pull_version(bucket, pull_dir, version=version, keep_local=keep)
    except IntegrityError as exc:
        _fail(str(exc), EXIT_CHECK_FAILED)
    except PullError as exc:
        _fail(str(exc))
    if result.library_graph_note:
        click.echo(f"citywok: {result.library_graph_note}", err=True)
    click.echo(
        f"pulled {result.version} into {result.path}: {len(result.downloaded)} shard(s) "
        f"downloaded, {len(result.reused)} reused"
        + (f"; library graph of {result.library_graph} segments built" if result.library_graph
           else "")
        + ("" if result.switched else " (already current)"),
        err=True,
    )  # fmt: skip
    click.echo(result.version)


def _check_library_graph_setting() -> None:
    """Exit 2 at once on a bad $CITYWOK_LIBRARY_GRAPH_MIN_SEGMENTS (not after the work)."""
    from .snapshot.library_graph import min_segments_setting

    try:
        min_segments_setting()
    except ValueError as exc:
        _fail(str(exc))


@main.command()
@click.argument("bucket_url")
@click.option(
    "--keep", type=click.IntRange(min=1), default=5, show_default=True,
    help="Newest versions kept (the latest always is).",
)  # fmt: skip
@click.option(
    "--grace", "grace_s", type=click.FloatRange(min=0), default=3600, show_default=True,
    help="Seconds an unreferenced blob is left alone (a publish may be in flight).",
)  # fmt: skip
def prune(bucket_url: str, keep: int, grace_s: float) -> None:
    """Delete old versions from BUCKET_URL and every shard no kept version references."""
    from .publishing import PruneBusyError, prune_versions

    with _bucket_errors(bucket_url):
        try:
            result = prune_versions(_bucket(bucket_url), keep=keep, grace_s=grace_s)
        except PruneBusyError as exc:
            _fail(str(exc))
    click.echo(
        f"kept {len(result.kept)} version(s); deleted {len(result.deleted_versions)} "
        f"version(s) and {len(result.deleted_blobs)} blob(s)"
        + (f"; removed {len(result.removed_leftovers)} leftover(s) of killed publishers"
           if result.removed_leftovers else "")
    )  # fmt: skip


@main.command()
@click.argument("source")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Server processes on the port, each using about one core and mapping the same "
    "shards [default: one per core].",
)  # fmt: skip
@click.option(
    "--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where a BUCKET_URL source is pulled to [default: $CITYWOK_HOME/serve-cache].",
)  # fmt: skip
@click.option(
    "--poll", "poll_s", type=click.FloatRange(min=0), default=5.0, show_default=True,
    help="Seconds between checks for a new version (0: never).",
)  # fmt: skip
@click.option(
    "--max-upload", "max_upload", type=click.IntRange(min=1), default=20 << 20,
    show_default=True,
    help="Largest accepted upload for POST /match, in bytes (413 past it, counted as it "
    "arrives).",
)  # fmt: skip
@click.option(
    "--decoder", type=click.Choice(["libav", "ffmpeg"]), default="libav", show_default=True,
    help="Decode uploads inside the worker (libav: fast) or with the ffmpeg command (a "
    "process per upload: slower, but a decoder crash on a hostile file stays there).",
)  # fmt: skip
@click.option(
    "--max-clip", "max_clip_s", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Seconds of an upload that are decoded and matched (the first) [default: 120; for "
    "POST /match?segments=true, a long recording, 600].",
)  # fmt: skip
@click.option(
    "--decode-timeout", "decode_timeout_s", type=click.FloatRange(min=0, min_open=True),
    default=10.0, show_default=True,
    help="Wall-clock seconds allowed to decode one upload (422 past it).",
)  # fmt: skip
@click.option(
    "--api-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Require an API key (Authorization: Bearer KEY, or X-API-Key) on every route but "
    "/healthz and /readyz: the file lists the keys' SHA-256, 'sha256:<hex> [label]' a line.",
)  # fmt: skip
@click.option(
    "--rate-limit", "rate_per_s", type=click.FloatRange(min=0), default=0.0,
    show_default=True,
    help="Requests per second per client (its API key, else its address), shared by the "
    "workers; 429 with Retry-After past it (0: no limit).",
)  # fmt: skip
@click.option(
    "--rate-burst", type=click.IntRange(min=1), default=None,
    help="Requests a client may make at once under --rate-limit [default: one second's "
    "worth].",
)  # fmt: skip
@click.option(
    "--max-client-uploads", type=click.IntRange(min=1), default=8, show_default=True,
    help="Uploads of one client in progress at once in each worker (429 past it).",
)  # fmt: skip
@click.option(
    "--header-timeout", "header_timeout_s", type=click.FloatRange(min=0, min_open=True),
    default=10.0, show_default=True,
    help="Seconds for a connection to send a request's headers (else it is closed).",
)  # fmt: skip
@click.option(
    "--body-timeout", "body_timeout_s", type=click.FloatRange(min=0, min_open=True),
    default=30.0, show_default=True,
    help="Seconds for a request's body to arrive after its headers (408 past it).",
)  # fmt: skip
@click.option(
    "--request-timeout", "request_timeout_s", type=click.FloatRange(min=0, min_open=True),
    default=60.0, show_default=True,
    help="Seconds for a request's answer to start (503 past it, e.g. queued behind others).",
)  # fmt: skip
@click.option(
    "--max-connections", type=click.IntRange(min=1), default=1000, show_default=True,
    help="Connections each worker holds at once (503 past it).",
)  # fmt: skip
@click.option(
    "--cors-origin", "cors_origins", multiple=True,
    help="An origin (https://example.org) whose web pages may call the API; repeatable "
    "[default: none].",
)  # fmt: skip
@click.option(
    "--match-by-words/--no-match-by-words", default=True, show_default=True,
    help="When the fingerprint finds nothing in an upload, transcribe its first 30 s and look "
    "for the words in the transcripts (up to seconds of CPU per such upload).",
)  # fmt: skip
@click.option(
    "--docs/--no-docs", default=True, show_default=True,
    help="Serve the API docs (/docs, /redoc, /openapi.json).",
)  # fmt: skip
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True,
    help="Log one JSON line per request on stderr (method, route, status, duration, "
    "client, request id).",
)  # fmt: skip
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
    show_default=True, help="Least severe log records written (JSON lines on stderr).",
)  # fmt: skip
@click.option(
    "--forwarded-allow-ips", default=None,
    help="Proxies (comma-separated addresses, or '*') whose X-Forwarded-For names the "
    "client for the limits and logs [default: 127.0.0.1].",
)  # fmt: skip
def serve(
    source: str,
    host: str,
    port: int,
    workers: int | None,
    cache_dir: Path | None,
    poll_s: float,
    max_upload: int,
    decoder: str,
    max_clip_s: float | None,
    decode_timeout_s: float,
    api_key_file: Path | None,
    rate_per_s: float,
    rate_burst: int | None,
    max_client_uploads: int,
    header_timeout_s: float,
    body_timeout_s: float,
    request_timeout_s: float,
    max_connections: int,
    cors_origins: tuple[str, ...],
    match_by_words: bool,
    docs: bool,
    access_log: bool,
    log_level: str,
    forwarded_allow_ips: str | None,
) -> None:
    """Serve SOURCE (a snapshot DIR or a BUCKET_URL) over HTTP: POST /match, GET /search,
    GET /episodes, GET /healthz, GET /readyz, GET /metrics, docs at /docs.

    A DIR that holds pulled versions is served from DIR/current; a plain directory of shards
    as it is. New versions (a new DIR/current, a moved latest.json) are swapped in between
    requests. A bucket unreachable at start is served from the cache's last complete version.
    Read-only: it never starts ingestion.
    """
    from .blobstore import BlobStoreError, is_bucket_url
    from .publishing import PullError
    from .serving import ApiKeyError, ServeConfig, default_workers, load_api_keys, open_at_start
    from .serving import app as app_defaults
    from .serving import serve as run_server
    from .settings import citywok_home
    from .snapshot import SnapshotError

    config = ServeConfig(
        source=source,
        cache_dir=str(cache_dir or citywok_home() / "serve-cache")
        if is_bucket_url(source)
        else None,
        max_upload_bytes=max_upload,
        # An explicit --max-clip holds for both kinds of upload; by default a recording
        # (segments=true) may run longer than a clip.
        max_clip_s=app_defaults.DEFAULT_MAX_CLIP_S if max_clip_s is None else max_clip_s,
        max_recording_s=(
            app_defaults.DEFAULT_MAX_RECORDING_S if max_clip_s is None else max_clip_s
        ),
        decode_timeout_s=decode_timeout_s,
        poll_s=poll_s or None,
        decoder="ffmpeg" if decoder == "ffmpeg" else "libav",
        api_key_file=str(api_key_file) if api_key_file else None,
        rate_per_s=rate_per_s or None,
        rate_burst=rate_burst,
        max_client_uploads=max_client_uploads,
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        request_timeout_s=request_timeout_s,
        max_connections=max_connections,
        cors_origins=cors_origins,
        match_by_words=match_by_words,
        docs=docs,
        access_log=access_log,
    )
    if api_key_file:
        try:
            load_api_keys(api_key_file)
        except ApiKeyError as exc:
            _fail(str(exc))
    # Opened once here so that a bad source fails now, with one clear line (and a bucket is
    # pulled before the workers start); closed before they are forked, each opens its own.
    try:
        with _bucket_errors(source):
            _, snapshot, version, problem = open_at_start(config.snapshot_source())
    except (SnapshotError, PullError, BlobStoreError) as exc:
        _fail(str(exc))
    snapshot.close()
    if problem:
        click.echo(f"citywok: warning: {source} is unavailable ({problem}); serving the "
                   f"cached version {version}", err=True)  # fmt: skip
    workers = workers or default_workers()
    click.echo(
        f"serving {source} (version {version or 'unpublished'}) on http://{host}:{port} "
        f"with {workers} worker(s)",
        err=True,
    )
    run_server(
        config, host=host, port=port, workers=workers, log_level=log_level,
        forwarded_allow_ips=forwarded_allow_ips,
    )  # fmt: skip


if __name__ == "__main__":
    main()
