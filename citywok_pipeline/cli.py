"""`citywok`: thin commands over the core and the pipeline.

Exit codes: 0 success; 1 a check failed (``verify``); 2 bad input (a file that is not
audio, a missing snapshot, bad arguments), after doing everything that could be done.
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

from .fingerprint.params import DEFAULT_PARAMS

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"citywok: error: {message}", err=True)
    sys.exit(code)


def _open_snapshot(snapshot_dir: str):  # type: ignore[no-untyped-def]
    from .publishing.local import resolve_snapshot_dir
    from .snapshot import Snapshot, SnapshotError

    try:
        # A pull directory is read through DIR/current; a plain one as it is.
        return Snapshot.open(resolve_snapshot_dir(snapshot_dir))
    except SnapshotError as exc:
        _fail(str(exc))


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
def index(
    media_root: Path, snapshot_dir: Path, fingerprints_only: bool, jobs: int | None, quiet: bool
) -> None:
    """Index MEDIA_ROOT/<show>/<season folder>/<files> into a snapshot.

    Season numbers come from folder names like 'Season 1', 'Season 01' or 'S01'; episode
    numbers from 'S01E03'-style file names, else from file order. Any container ffmpeg
    reads works. Re-running on the same snapshot only processes what changed. Files that
    cannot be decoded are reported (exit code 2) and the rest is indexed.
    """
    from tqdm import tqdm

    from .indexer import TranscriptSide, index_library

    if not media_root.is_dir():
        _fail(f"{media_root}: media root is not a directory")

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
    report = index_library(
        media_root,
        snapshot_dir,
        params=DEFAULT_PARAMS,
        jobs=jobs,
        progress=bar("fingerprinting"),
        transcripts=transcripts,
        transcript_progress=bar("transcribing"),
    )
    for source, reason in report.skipped:
        click.echo(f"citywok: skipped {source}: {reason}", err=True)
    for source, reason in report.failures:
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
        ),
        err=True,
    )
    if report.failures:
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
@click.argument("clips", nargs=-1, required=True)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per clip per line on stdout."
)
def match(snapshot_dir: Path, clips: tuple[str, ...], as_json: bool) -> None:
    """Say which episode each CLIP comes from, and at what second.

    A clip is a file or URL in any format ffmpeg reads ('-' reads standard input). With
    --json: {"query", "ambiguous", "matches": [{"episode_id", "source", "season",
    "offset_s", "score", "confidence"}, ...]}, best first, empty when the clip is not in
    the library; ambiguous is true when the audio is shared by several episodes.
    """
    from .fingerprint.audio import DecodeError, decode
    from .fingerprint.matcher import match_samples

    snap = _open_snapshot(str(snapshot_dir))
    failed = False
    with snap:
        for clip in clips:
            try:
                source: Any = sys.stdin.buffer.read() if clip == "-" else clip
                samples = decode(
                    source,
                    sample_rate=snap.params.sample_rate,
                    label="<stdin>" if clip == "-" else None,
                )
            except DecodeError as exc:
                click.echo(f"citywok: error: {exc}", err=True)
                failed = True
                continue
            result = match_samples(samples, snap)
            if as_json:
                click.echo(json.dumps(result.to_dict(clip)))
            elif not result.matches:
                click.echo(f"{clip}: no match")
            else:
                label = "shared by" if result.ambiguous else "matches"
                click.echo(f"{clip}: {label}")
                for m in result.matches:
                    click.echo(
                        f"  {m.episode_id}  at {m.offset_s:8.2f} s  score {m.score:4d}  "
                        f"confidence {m.confidence:.2f}  ({m.source})"
                    )
    if failed:
        sys.exit(EXIT_BAD_INPUT)


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
@click.option("--exact", is_flag=True, help="Score every segment (no sign-bit shortcut).")
def search(
    args: tuple[str, ...],
    as_json: bool,
    limit: int,
    keywords: tuple[str, ...],
    database: str | None,
    model_path: Path | None,
    exact: bool,
) -> None:
    """Find where something is said: transcript segments nearest TEXT in meaning, best first.

    Searches the snapshot in SNAPSHOT_DIR, or with --database the transcript database (then
    give TEXT alone). With --json: {"episode_id", "source", "start_s", "end_s", "text",
    "score"} per line, score being the cosine similarity.
    """
    from .snapshot import SnapshotError
    from .transcripts.embedder import load_embedder
    from .transcripts.errors import TranscriptError

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
    snap = None if database else _open_snapshot(args[0])
    try:
        if database:
            from .transcripts.postgres import connect, search_text

            with connect(database) as conn:  # an unreachable database fails before the model loads
                hits = search_text(
                    conn,
                    text,
                    embedder=load_embedder(model_path),
                    limit=limit,
                    keyword=list(keywords) or None,
                )
        else:
            embedder = load_embedder(model_path)
            from .transcripts.search import SegmentSearcher

            with snap:
                if not snap.n_segments:
                    click.echo(
                        f"citywok: {args[0]} holds no transcript segments "
                        "(built with --fingerprints-only?)",
                        err=True,
                    )
                searcher = SegmentSearcher(snap, embedder)
                hits = searcher.search(text, limit=limit, keywords=keywords, exact=exact)
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


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
def info(snapshot_dir: Path, as_json: bool) -> None:
    """Show a snapshot's shards, counts, sizes and fingerprint params."""
    snap = _open_snapshot(str(snapshot_dir))
    with snap:
        data = snap.info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
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


@main.command()
@click.argument("snapshot_dir", type=click.Path(path_type=Path))
def verify(snapshot_dir: Path) -> None:
    """Check every shard's consistency and checksums; exit 1 if anything is wrong."""
    from .snapshot import shard_paths, verify_snapshot

    # Nothing to check is bad input (exit 2), not a failed check.
    if not snapshot_dir.is_dir():
        _fail(f"{snapshot_dir}: no such snapshot directory")
    if not shard_paths(snapshot_dir):
        _fail(f"{snapshot_dir}: no shards here; build one with `citywok index`")
    problems = verify_snapshot(snapshot_dir)
    for p in problems:
        click.echo(f"citywok: {p}", err=True)
    if problems:
        sys.exit(EXIT_CHECK_FAILED)
    click.echo(f"{snapshot_dir}: ok")


def _bucket(url: str):  # type: ignore[no-untyped-def]
    from .publishing import BucketError, open_bucket

    try:
        return open_bucket(url)
    except BucketError as exc:
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

    bucket = _bucket(bucket_url)
    try:
        with _bucket_errors(bucket_url):
            result = pull_version(bucket, pull_dir, version=version, keep_local=keep)
    except IntegrityError as exc:
        _fail(str(exc), EXIT_CHECK_FAILED)
    except PullError as exc:
        _fail(str(exc))
    click.echo(
        f"pulled {result.version} into {result.path}: {len(result.downloaded)} shard(s) "
        f"downloaded, {len(result.reused)} reused"
        + ("" if result.switched else " (already current)"),
        err=True,
    )
    click.echo(result.version)


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
    from .publishing import prune_versions

    with _bucket_errors(bucket_url):
        result = prune_versions(_bucket(bucket_url), keep=keep, grace_s=grace_s)
    click.echo(
        f"kept {len(result.kept)} version(s); deleted {len(result.deleted_versions)} "
        f"version(s) and {len(result.deleted_blobs)} blob(s)"
    )


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
    show_default=True, help="Largest accepted upload for POST /match, in bytes.",
)  # fmt: skip
@click.option(
    "--decoder", type=click.Choice(["libav", "ffmpeg"]), default="libav", show_default=True,
    help="Decode uploads inside the worker (libav: fast) or with the ffmpeg command (a "
    "process per upload: slower, but a decoder crash on a hostile file stays there).",
)  # fmt: skip
@click.option(
    "--max-clip", "max_clip_s", type=click.FloatRange(min=0, min_open=True), default=120.0,
    show_default=True, help="Seconds of an upload that are decoded and matched (the first).",
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
    max_clip_s: float,
) -> None:
    """Serve SOURCE (a snapshot DIR or a BUCKET_URL) over HTTP: POST /match, GET /search,
    GET /episodes, GET /healthz, docs at /docs.

    A DIR that holds pulled versions is served from DIR/current; a plain directory of shards
    as it is. New versions (a new DIR/current, a moved latest.json) are swapped in between
    requests. Read-only: it never starts ingestion.
    """
    from .publishing import BucketError, PullError, is_bucket_url
    from .serving import ServeConfig, default_workers
    from .serving import serve as run_server
    from .settings import citywok_home
    from .snapshot import SnapshotError

    config = ServeConfig(
        source=source,
        cache_dir=str(cache_dir or citywok_home() / "serve-cache")
        if is_bucket_url(source)
        else None,
        max_upload_bytes=max_upload,
        max_clip_s=max_clip_s,
        poll_s=poll_s or None,
        decoder="ffmpeg" if decoder == "ffmpeg" else "libav",
    )
    # Opened once here so that a bad source fails now, with one clear line (and a bucket is
    # pulled before the workers start); closed before they are forked, each opens its own.
    try:
        with _bucket_errors(source):
            snapshot, version = config.snapshot_source().open()
    except (SnapshotError, PullError, BucketError) as exc:
        _fail(str(exc))
    snapshot.close()
    workers = workers or default_workers()
    click.echo(
        f"serving {source} (version {version or 'unpublished'}) on http://{host}:{port} "
        f"with {workers} worker(s)",
        err=True,
    )
    run_server(config, host=host, port=port, workers=workers, log_level="warning")


if __name__ == "__main__":
    main()
