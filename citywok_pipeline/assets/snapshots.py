"""One LMDB shard per season, built from the fingerprints and segment embeddings of its
videos, and its check."""

import json
import time

import dagster as dg
import numpy as np

from ..artefacts import ArtefactFormatError, data_version, unpack_fingerprints
from ..catalog import fingerprints_of
from ..fingerprint.hashes import Hashes
from ..fingerprint.records import Episode
from ..resources import (
    ArtefactNotFoundError,
    ArtefactStore,
    CatalogResource,
    SeasonFoldersResource,
    SnapshotDirectoryResource,
)
from ..snapshot import SnapshotError, open_shard, verify_shard, write_shard
from ..snapshot.segments import SegmentTable
from ..transcripts.embeddings import SegmentEmbeddings, pack_embeddings, unpack_embeddings
from .embeddings import segment_embeddings
from .fingerprints import fingerprints
from .partitions import (
    PARAMS,
    SNAPSHOT_CODE_VERSION,
    fingerprints_key,
    season_partitions,
    segment_embeddings_key,
    shard_key,
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
    group_name="seasons",
    kinds={"lmdb"},
)
def season_snapshot(
    context: dg.AssetExecutionContext,
    catalog: CatalogResource,
    artefacts: ArtefactStore,
    snapshots: SnapshotDirectoryResource,
    media: SeasonFoldersResource,
) -> dg.MaterializeResult:
    """The season's LMDB shard: its present videos' fingerprints, transcript segments and vectors."""
    season = context.partition_key
    cat = catalog.open()
    started = time.perf_counter()
    episodes: list[Episode] = []
    hashes: list[Hashes] = []
    inputs: dict[str, str] = {}
    embedded: list[SegmentEmbeddings] = []
    pending: list[str] = []
    for v in cat.videos(season=season):
        if not v.fingerprints_version:
            pending.append(v.episode_id)
            continue
        key = fingerprints_key(v.episode_id)
        try:
            stored = unpack_fingerprints(artefacts.get(key), label=artefacts.uri(key))
        except (ArtefactNotFoundError, ArtefactFormatError) as exc:
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
        episodes.append(
            Episode(
                episode_id=v.episode_id, season=season, show=v.show,
                season_number=v.season_number, episode_number=v.episode_number,
                source=v.source, title=v.title, duration_s=float(v.duration_s or 0.0),
                sha256=v.sha256 or "", size=v.size, mtime_ns=v.mtime_ns,
            )
        )  # fmt: skip
        hashes.append(stored.hashes)
        inputs[v.episode_id] = stored.data_version
        if v.embeddings_version:
            seg = _embeddings(artefacts, season, v.episode_id)
            embedded.append(seg)
            inputs[v.episode_id] = v.input_version or stored.data_version

    path = snapshots.shard(season)
    version = data_version(
        PARAMS.to_json(),
        json.dumps([e.to_dict() for e in episodes], sort_keys=True),
        json.dumps(inputs, sort_keys=True),
    )
    metadata: dict[str, object] = {
        "videos": dg.MetadataValue.json(inputs),
        "video_count": len(inputs),
        "pending_videos": dg.MetadataValue.json(pending),
    }
    if episodes:
        extra = {
            "media_root": str(media.path.resolve()),
            "failures": [],
            "videos": inputs,
            "data_version": version,
            "built_by": {"dagster_run_id": context.run.run_id},
        }
        segments = _segment_table(season, episodes, embedded)
        info = write_shard(
            path, season=season, episodes=episodes, hashes=hashes, params=PARAMS, extra=extra,
            segments=segments,
        )  # fmt: skip
        stored_shard = artefacts.put_file(shard_key(season), path)
        metadata.update(
            postings=info.n_postings,
            shard_bytes=info.size_bytes,
            hours=dg.MetadataValue.float(round(sum(e.duration_s for e in episodes) / 3600, 4)),
            segments=len(segments) if segments is not None else 0,
            embedding_model=segments.model if segments is not None else "",
            shard=dg.MetadataValue.path(str(path)),
            artefact=dg.MetadataValue.url(stored_shard.uri),
        )
    else:
        # Every video of the season is gone (or none has fingerprints yet): so is its shard.
        path.unlink(missing_ok=True)
        artefacts.delete(shard_key(season))
        metadata.update(postings=0, shard_bytes=0, segments=0)
    metadata["build_s"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    cat.record_season_build(season, inputs=inputs, shard_version=version)
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata)


def _embeddings(artefacts: ArtefactStore, season: str, episode_id: str) -> SegmentEmbeddings:
    key = segment_embeddings_key(episode_id)
    try:
        return unpack_embeddings(artefacts.get(key), label=artefacts.uri(key))
    except (ArtefactNotFoundError, ValueError) as exc:
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
    snapshots: SnapshotDirectoryResource,
) -> dg.AssetCheckResult:
    """The shard passes `citywok verify` and holds exactly its videos' fingerprint postings and transcript segments."""
    season = context.partition_key
    build = catalog.open().season_builds().get(season)
    path = snapshots.shard(season)
    if build is None:
        return dg.AssetCheckResult(passed=False, description=f"{season}: never built")
    if not build.inputs:
        return dg.AssetCheckResult(
            passed=not path.exists(),
            description="no video with fingerprints: the season has no shard",
            metadata={"shard_exists": path.exists()},
        )
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
            except (ArtefactNotFoundError, ArtefactFormatError, dg.Failure) as exc:
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
