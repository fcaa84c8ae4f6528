"""media_scan_sensor: the media source, scanned into video and season partitions."""

import json
from collections.abc import Iterable

import dagster as dg

from ..artefacts import data_version
from ..assets import source_media, video_job
from ..assets.partitions import season_partitions, video_partitions
from ..catalog import ScannedFile, VideoRecord, plan_scan, utc_now
from ..resources import CatalogResource, SeasonFoldersResource
from ..youtube import is_youtube_episode


def orphan_partitions(
    partitions: Iterable[str], records: Iterable[VideoRecord], files: Iterable[ScannedFile]
) -> list[str]:
    """Video partitions that neither the catalog nor the scan knows: made by hand ("Add a
    partition" in every launch dialog), never by a sensor. A sensor writes the catalog row
    before it asks for the partition, so a partition without one is never a video in flight."""
    known = {r.episode_id for r in records} | {f.episode_id for f in files}
    return sorted(set(partitions) - known)


@dg.sensor(
    job=video_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def media_scan_sensor(
    context: dg.SensorEvaluationContext,
    media: SeasonFoldersResource,
    catalog: CatalogResource,
) -> dg.SensorResult | dg.SkipReason:
    """Scans the media source: new and changed videos get partitions and runs, removed ones are marked in the catalog."""
    try:
        scan = media.scan()
    except FileNotFoundError as exc:
        return dg.SkipReason(str(exc))
    cat = catalog.open()
    now = utc_now()
    instance = context.instance
    records = cat.videos(include_removed=True)
    partitions = set(instance.get_dynamic_partitions(video_partitions.name))
    plan = plan_scan(
        scan.files,
        # YouTube videos are youtube_uploads_sensor's: a folder scan never lists them.
        {r.episode_id: r for r in records if not is_youtube_episode(r.episode_id)},
        video_partitions=partitions,
        season_partitions=set(instance.get_dynamic_partitions(season_partitions.name)),
        now=now,
    )
    orphans = orphan_partitions(partitions, records, scan.files)
    for key in orphans:
        context.log.warning(
            f"deleting video partition {key}: the catalog holds no video {key} and the media "
            'source has no file for it (made with "Add a partition"?); nothing runs for it'
        )
    # Skipped files are reported when the list changes, not on every tick.
    problems = sorted(scan.skipped) + sorted(plan.duplicates)
    digest = data_version(json.dumps(problems))
    previous = json.loads(context.cursor) if context.cursor else {}
    if problems and previous.get("skipped") != digest:
        for source, reason in problems:
            context.log.warning(f"skipped {source}: {reason}")
    cursor = json.dumps({"skipped": digest, "scanned_at": now, "files": len(scan.files)})
    if plan.refused:
        return dg.SkipReason(plan.refused)
    if plan.is_empty and not orphans:
        return dg.SensorResult(skip_reason=f"{len(scan.files)} file(s), nothing new", cursor=cursor)

    cat.apply_scan(plan, now=now)
    files = {f.episode_id: f for f in scan.files}
    observations = [
        dg.AssetObservation(
            asset_key=source_media.key,
            partition=eid,
            tags={"dagster/data_version": f"{files[eid].size}-{files[eid].mtime_ns}"},
            metadata={
                "source": dg.MetadataValue.path(files[eid].source),
                "bytes": files[eid].size,
                "season": files[eid].season,
            },
        )
        for eid in (*plan.new, *plan.changed)
    ]
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if plan.add_season_partitions:
        requests.append(season_partitions.build_add_request(list(plan.add_season_partitions)))
    if plan.add_video_partitions:
        requests.append(video_partitions.build_add_request(list(plan.add_video_partitions)))
    if plan.delete_video_partitions or orphans:
        requests.append(
            video_partitions.build_delete_request([*plan.delete_video_partitions, *orphans])
        )
    if plan.new or plan.changed or plan.removed:
        context.log.info(
            f"{len(plan.new)} new, {len(plan.changed)} changed, {len(plan.removed)} removed "
            f"video(s); {len(plan.runs)} run(s) requested"
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=r.run_key, partition_key=r.episode_id) for r in plan.runs
        ],
        dynamic_partitions_requests=requests,
        asset_events=observations,
        cursor=cursor,
    )
