"""One LMDB shard per season, built from the fingerprints and segment embeddings of its
videos, and its check."""

import json
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from ..artefacts import ArtefactFormatError, data_version, unpack_fingerprints
from ..blobstore import BlobNotFoundError
from ..catalog import SeasonBuild, VideoRecord, fingerprints_of
from ..fingerprint.hashes import Hashes
from ..fingerprint.records import Episode
from ..resources import ArtefactStore, CatalogResource, SnapshotDirectoryResource
from ..snapshot import SnapshotError, open_shard, shard_path, verify_shard, write_shard
from ..snapshot.segments import SegmentTable
from ..transcripts.embeddings import SegmentEmbeddings, pack_embeddings, unpack_embeddings
from .embeddings import segment_embeddings
from .fingerprints import fingerprints
from .partitions import (
    PARAMS,
    RETRY,
    SNAPSHOT_CODE_VERSION,
    fingerprints_key,
    season_partitions,
    segment_embeddings_key,
    shard_key,
    stop_if_cancelled,
)


@dg.asset(
    partitions_def=season_partitions,
    # A season reads some of the videos' fingerprints; which ones is data (the catalog), so
    # the edge is declared with AllPartitionMapping for lineage. Without an explicit mapping
    # Dagster would silently map video keys to season keys by identity.
    deps=[
        dg.AssetDep(fingerprints, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(segment_embeddings, partition_mapping=dg.AllPartitionMapping()),
    ],
    code_version=SNAPSHOT_CODE_VERSION,
    # A lost catalog or store connection is retried; unusable inputs fail without retries.
    retry_policy=RETRY,
    group_name="seasons",
    kinds={"lmdb"},
)
def season_snapshot(
    context: dg.AssetExecutionContext,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    snapshots: SnapshotDirectoryResource,
) -> dg.MaterializeResult:
    """The season's LMDB shard: its present videos' fingerprints, transcript segments and vectors."""
    stop_if_cancelled(context)  # a retry after a cancel's interrupt (see partitions.RETRY)
    season = context.partition_key
    cat = catalog.open()
    started = time.perf_counter()
    key = shard_key(season)
    videos = cat.videos(season=season)
    ready = [v for v in videos if v.fingerprints_version]
    pending = [v.episode_id for v in videos if not v.fingerprints_version]
    metadata: dict[str, object] = {"pending_videos": dg.MetadataValue.json(pending)}

    # What the catalog says goes in; a build of exactly that, whose shard is stored, is not
    # repeated: nothing is read or written (the same inputs would give the same bytes).
    wanted = {v.episode_id: v.input_version or "" for v in ready}
    version = _shard_version([_episode(v) for v in ready], wanted)
    last = cat.season_builds().get(season)
    if (
        last is not None
        and last.shard_version == version
        and last.inputs == wanted
        and (not wanted or artefacts.exists(key))
    ):
        if wanted:
            snapshots.keep_if_missing(season, artefacts.open(), key)
        metadata.update(videos=dg.MetadataValue.json(wanted), video_count=len(wanted))
        metadata.update(unchanged=True, build_s=_since(started))
        return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata)

    episodes: list[Episode] = []
    hashes: list[Hashes] = []
    inputs: dict[str, str] = {}
    embedded: list[SegmentEmbeddings] = []
    for v in ready:
        fp_key = fingerprints_key(v.episode_id)
        try:
            stored = unpack_fingerprints(artefacts.get(fp_key), label=artefacts.uri(fp_key))
        except (BlobNotFoundError, ArtefactFormatError) as exc:
            raise dg.Failure(
                description=f"{season}: fingerprints of {v.episode_id} are unusable ({exc}); "
                "re-materialise fingerprints for that video",
                allow_retries=False,
            ) from exc
        if stored.params != PARAMS:
            raise dg.Failure(
                description=f"{season}: fingerprints of {v.episode_id} were made with other params; "
                "re-materialise fingerprints for the season's videos",
                allow_retries=False,
            )
        episodes.append(_episode(v))
        hashes.append(stored.hashes)
        inputs[v.episode_id] = stored.data_version
        if v.embeddings_version:
            embedded.append(_embeddings(artefacts, season, v.episode_id))
            inputs[v.episode_id] = v.input_version or stored.data_version

    # What the store holds may be newer than what the catalog said: the shard records that.
    version = _shard_version(episodes, inputs)
    metadata.update(videos=dg.MetadataValue.json(inputs), video_count=len(inputs))
    if episodes:
        extra = {"failures": [], "videos": inputs, "data_version": version}
        segments = _segment_table(season, episodes, embedded)
        # Built in this step's own temp folder, then stored: no later step reads local disk.
        with tempfile.TemporaryDirectory(prefix="citywok-shard-") as tmp:
            path = shard_path(tmp, season)
            info = write_shard(
                path, season=season, episodes=episodes, hashes=hashes, params=PARAMS,
                extra=extra, segments=segments, built_at=_built_at(ready),
            )  # fmt: skip
            stored_shard = artefacts.put(key, path)
        local = snapshots.keep(season, artefacts.open(), key)
        metadata.update(
            postings=info.n_postings,
            shard_bytes=info.size_bytes,
            sha256=stored_shard.sha256,
            hours=dg.MetadataValue.float(round(sum(e.duration_s for e in episodes) / 3600, 4)),
            segments=len(segments) if segments is not None else 0,
            embedding_model=segments.model if segments is not None else "",
            artefact=dg.MetadataValue.url(stored_shard.uri),
            **({"shard": dg.MetadataValue.path(str(local))} if local else {}),
        )
    else:
        # Every video of the season is gone (or none has fingerprints yet): so is its shard.
        artefacts.delete(key)
        snapshots.drop(season)
        metadata.update(postings=0, shard_bytes=0, segments=0)
    metadata.update(unchanged=False, build_s=_since(started))
    cat.record_season_build(season, inputs=inputs, shard_version=version)
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata)


def _episode(v: VideoRecord) -> Episode:
    return Episode(
        episode_id=v.episode_id, season=v.season, show=v.show,
        season_number=v.season_number, episode_number=v.episode_number,
        source=v.source, title=v.title, duration_s=float(v.duration_s or 0.0),
        sha256=v.sha256 or "", size=v.size, mtime_ns=v.mtime_ns,
    )  # fmt: skip


def _shard_version(episodes: list[Episode], inputs: dict[str, str]) -> str:
    return data_version(
        PARAMS.to_json(),
        json.dumps([e.to_dict() for e in episodes], sort_keys=True),
        json.dumps(inputs, sort_keys=True),
    )


def _built_at(videos: list[VideoRecord]) -> str:
    """When the newest of the shard's source files was found or changed: a time that follows
    from the inputs, so that a rebuild of the same inputs gives the same bytes."""
    newest = max(v.changed_at for v in videos)
    return newest[:19] + "Z"


def _since(started: float) -> dg.FloatMetadataValue:
    return dg.MetadataValue.float(round(time.perf_counter() - started, 3))


def _embeddings(artefacts: ArtefactStore, season: str, episode_id: str) -> SegmentEmbeddings:
    key = segment_embeddings_key(episode_id)
    try:
        return unpack_embeddings(artefacts.get(key), label=artefacts.uri(key))
    except (BlobNotFoundError, ValueError) as exc:
        raise dg.Failure(
            description=f"{season}: segment embeddings of {episode_id} are unusable ({exc}); "
            "re-materialise segment_embeddings for that video",
            allow_retries=False,
        ) from exc


def _segment_table(
    season: str, episodes: list[Episode], embedded: list[SegmentEmbeddings]
) -> SegmentTable | None:
    """The season's segments (None when no video has embeddings: a fingerprints-only shard)."""
    if not embedded:
        return None
    index = {e.episode_id: i for i, e in enumerate(episodes)}
    models = {(s.model, s.dim) for s in embedded}
    if len(models) > 1:
        raise dg.Failure(
            description=f"{season}: videos were embedded with different models {sorted(models)}; "
            "re-materialise segment_embeddings for the season's videos",
            allow_retries=False,
        )
    model, dim = models.pop()
    return SegmentTable.concat(
        [
            SegmentTable(
                np.full(len(s), index[s.episode_id], np.uint32),
                s.start,
                s.end,
                s.texts,
                s.vectors,
                s.model,
            )
            for s in embedded
        ],
        model=model,
        dim=dim,
    )


@dg.asset_check(asset=season_snapshot, blocking=True)
def season_snapshot_verifies(
    context: dg.AssetCheckExecutionContext,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
) -> dg.AssetCheckResult:
    """The stored shard passes `citywok verify` and holds exactly its videos' fingerprint postings and transcript segments."""
    season = context.partition_key
    build = catalog.open().season_builds().get(season)
    key = shard_key(season)
    if build is None:
        return dg.AssetCheckResult(passed=False, description=f"{season}: never built")
    if not build.inputs:
        stored = artefacts.exists(key)
        return dg.AssetCheckResult(
            passed=not stored,
            description="no video with fingerprints: the season has no shard",
            metadata={"shard_exists": stored},
        )
    # The shard as stored, fetched into this step's own temp folder.
    with tempfile.TemporaryDirectory(prefix="citywok-check-") as tmp:
        path = shard_path(tmp, season)
        try:
            with open(path, "wb") as f:
                artefacts.open().download(key, f)
        except BlobNotFoundError as exc:
            return dg.AssetCheckResult(passed=False, description=f"{season}: {exc}")
        return _verify_stored_shard(path, season, build, artefacts)


def _verify_stored_shard(
    path: Path, season: str, build: SeasonBuild, artefacts: ArtefactStore
) -> dg.AssetCheckResult:
    problems = verify_shard(path)
    expected_total = actual_total = expected_segments = actual_segments = 0
    stale: list[str] = []
    if not problems:
        try:
            shard = open_shard(path, params=PARAMS)
        except SnapshotError as exc:
            problems.append(str(exc))
        else:
            try:
                went_in = shard.meta.get("extra", {}).get("videos", {})
                if went_in != build.inputs:
                    problems.append(
                        f"{path.name}: holds {sorted(went_in)}, the catalog recorded {sorted(build.inputs)}"
                    )
                segs = shard.segments
                per_episode = np.bincount(
                    segs.episode if segs is not None else np.zeros(0, np.int64),
                    minlength=len(shard.episodes),
                )
                for i, e in enumerate(shard.episodes):
                    key = fingerprints_key(e.episode_id)
                    stored = unpack_fingerprints(artefacts.get(key), label=artefacts.uri(key))
                    if stored.data_version != fingerprints_of(went_in.get(e.episode_id, "")):
                        stale.append(e.episode_id)  # re-fingerprinted since: a rebuild is due
                        continue
                    expected_total += stored.n_postings
                    actual_total += e.n_hashes
                    if stored.n_postings != e.n_hashes:
                        problems.append(
                            f"{e.episode_id}: {e.n_hashes} postings in the shard, "
                            f"{stored.n_postings} in its fingerprints"
                        )
                    embedded_version = went_in.get(e.episode_id, "").partition("+")[2]
                    if embedded_version:
                        emb = _embeddings(artefacts, season, e.episode_id)
                        if pack_embeddings(emb)[1] != embedded_version:
                            stale.append(e.episode_id)  # re-embedded since: a rebuild is due
                            continue
                        expected_segments += len(emb)
                        actual_segments += int(per_episode[i])
                        if len(emb) != per_episode[i]:
                            problems.append(
                                f"{e.episode_id}: {int(per_episode[i])} segments in the shard, "
                                f"{len(emb)} in its segment embeddings"
                            )
            except (BlobNotFoundError, ArtefactFormatError, dg.Failure) as exc:
                problems.append(str(exc))
            finally:
                shard.close()
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems[:5]) if problems else None,
        metadata={
            "problems": dg.MetadataValue.json(problems),
            "expected_postings": expected_total,
            "shard_postings": actual_total,
            "expected_segments": expected_segments,
            "shard_segments": actual_segments,
            "stale_videos": dg.MetadataValue.json(stale),
        },
    )
