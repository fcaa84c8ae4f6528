"""The whole graph materialised for a small generated library, in-process, on real storage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from citywok_pipeline.assets.partitions import transcript_key
from citywok_pipeline.blobstore import BlobNotFoundError, S3BlobStore
from citywok_pipeline.catalog import open_catalog
from citywok_pipeline.definitions import artefact_store_for
from citywok_pipeline.demo.degrade import cut
from citywok_pipeline.demo.library import encode
from citywok_pipeline.fingerprint.audio import decode
from citywok_pipeline.resources import ArtefactStore
from citywok_pipeline.snapshot import open_shard, shard_paths, verify_snapshot
from citywok_pipeline.transcripts.artefact import unpack_transcript

from .conftest import Pipeline, S3Server, sqlite_instance

pytestmark = pytest.mark.slow

SEASONS = {"harbour-lights-s01", "the-night-kitchen-s01"}
VIDEOS = {f"{s}e0{i}" for s in SEASONS for i in (1, 2)}


def latest_materialization(
    instance: dg.DagsterInstance, key: str, partition: str
) -> dg.AssetMaterialization:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{key} {partition} was never materialised"
    materialization = records[0].asset_materialization
    assert materialization is not None
    return materialization


def data_version(materialization: dg.AssetMaterialization) -> str:
    return materialization.tags["dagster/data_version"]


def shard_episodes(snapshot: Path, season: str) -> list[str]:
    shard = open_shard(snapshot / f"{season}.lmdb")
    try:
        return [e.episode_id for e in shard.episodes]
    finally:
        shard.close()


def match_with_cli(snapshot: Path, clip: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "citywok_pipeline.cli", "match", str(snapshot), str(clip), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def search_with_cli(snapshot: Path, text: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "citywok_pipeline.cli", "search", str(snapshot), text, "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def clip_of(media: Path, source: str, tmp_path: Path, start_s: float = 7.0) -> Path:
    samples = decode(media / source, sample_rate=8000)
    return encode(
        cut(samples, 8000, start_s=start_s, duration_s=5.0), tmp_path / "clip.wav", sample_rate=8000
    )


def assert_fully_built(p: Pipeline, report) -> None:  # type: ignore[no-untyped-def]
    assert not report.failures, report.failures
    assert {r.partition for r in report.runs_of("video_job")} == VIDEOS
    assert {r.partition for r in report.runs_of("season_snapshot_job")} == SEASONS
    assert set(p.instance.get_dynamic_partitions("videos")) == VIDEOS
    assert set(p.instance.get_dynamic_partitions("seasons")) == SEASONS
    assert {q.stem for q in shard_paths(p.snapshot)} == SEASONS
    assert verify_snapshot(p.snapshot) == []


def test_the_graph_materialises_on_sqlite_into_a_snapshot_citywok_match_reads(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    report = pipeline.run()
    assert_fully_built(pipeline, report)

    # Every season lists the videos and the fingerprints' data versions that went in.
    for season in SEASONS:
        shard_meta = latest_materialization(pipeline.instance, "season_snapshot", season).metadata
        went_in = shard_meta["videos"].value
        assert set(went_in) == {v for v in VIDEOS if v.startswith(season)}
        for video, version in went_in.items():  # type: ignore[union-attr]
            # "<fingerprints data version>+<segment embeddings data version>"
            assert version == "+".join(
                data_version(latest_materialization(pipeline.instance, asset, video))
                for asset in ("fingerprints", "segment_embeddings")
            )
        check = pipeline.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("season_snapshot"), "season_snapshot_verifies")]
        )
        assert check, "the shard check never ran"

    audio = latest_materialization(pipeline.instance, "raw_audio", "harbour-lights-s01e01").metadata
    assert audio["duration_s"].value == pytest.approx(15.0, abs=0.1)
    assert audio["waveform"].value.startswith("![waveform](data:image/png;base64,")  # type: ignore[union-attr]
    assert audio["flac_bytes"].value < audio["duration_s"].value * 8000 * 2  # type: ignore[operator]

    video = open_catalog(pipeline.catalog_path).video("harbour-lights-s01e01")
    assert video is not None and video.season == "harbour-lights-s01"
    assert len(video.sha256 or "") == 64 and video.duration_s == pytest.approx(15.0, abs=0.1)
    assert video.source_uri.startswith("file://") and video.found_at and not video.removed

    source = video.source
    answer = match_with_cli(pipeline.snapshot, clip_of(pipeline.media, source, tmp_path))
    best = answer["matches"][0]
    assert (best["episode_id"], best["source"]) == ("harbour-lights-s01e01", source)
    assert best["offset_s"] == pytest.approx(7.0, abs=0.1)

    # Transcript search: what the transcriber heard in one episode is found there, at its second.
    embedded = latest_materialization(pipeline.instance, "segment_embeddings", video.episode_id)
    assert embedded.metadata["model"].value == "all-MiniLM-L6-v2"
    spoken = unpack_transcript(pipeline.artefacts.get(transcript_key(video.episode_id)))
    said = max(spoken.segments, key=lambda s: len(s.text.split()))
    hit = search_with_cli(pipeline.snapshot, said.text)[0]
    assert (hit["episode_id"], hit["source"]) == (video.episode_id, source)
    assert hit["start_s"] == pytest.approx(said.start, abs=0.01)
    # The default ranking is hybrid: its score is the fused rank; the meaning's is "cosine".
    assert hit["cosine"] > 0.9


def test_rematerialising_gives_the_same_data_versions_and_no_duplicates(pipeline: Pipeline) -> None:
    assert_fully_built(pipeline, pipeline.run())
    keys_before = pipeline.artefacts.list_keys()
    video, season = "the-night-kitchen-s01e02", "the-night-kitchen-s01"
    before = {
        k: data_version(latest_materialization(pipeline.instance, k, p))
        for k, p in (("raw_audio", video), ("fingerprints", video), ("season_snapshot", season))
    }
    stored = pipeline.home / "artefacts" / "shards" / f"{season}.lmdb"
    stored_before = (stored.read_bytes(), stored.stat().st_mtime_ns)
    defs = pipeline.defs
    assert (
        defs.resolve_job_def("video_job")
        .execute_in_process(instance=pipeline.instance, partition_key=video)
        .success
    )
    assert (
        defs.resolve_job_def("season_snapshot_job")
        .execute_in_process(instance=pipeline.instance, partition_key=season)
        .success
    )
    # The same inputs as the last build: nothing was read or rewritten.
    assert (stored.read_bytes(), stored.stat().st_mtime_ns) == stored_before
    build = latest_materialization(pipeline.instance, "season_snapshot", season)
    assert build.metadata["unchanged"].value is True
    # Built again from nothing (the stored shard lost), they give the same bytes.
    pipeline.artefacts.delete(f"shards/{season}.lmdb")
    assert (
        defs.resolve_job_def("season_snapshot_job")
        .execute_in_process(instance=pipeline.instance, partition_key=season)
        .success
    )
    assert stored.read_bytes() == stored_before[0]
    after = {
        k: data_version(latest_materialization(pipeline.instance, k, p))
        for k, p in (("raw_audio", video), ("fingerprints", video), ("season_snapshot", season))
    }
    assert after == before
    assert pipeline.artefacts.list_keys() == keys_before
    assert shard_episodes(pipeline.snapshot, season) == [
        "the-night-kitchen-s01e01",
        "the-night-kitchen-s01e02",
    ]
    assert set(pipeline.instance.get_dynamic_partitions("videos")) == VIDEOS
    # Nothing changed on disk: the sensors request nothing more.
    again = pipeline.run()
    assert again.runs == []


def test_a_new_episode_file_rebuilds_only_its_season(
    pipeline: Pipeline, spare_episode: tuple[Path, str]
) -> None:
    assert_fully_built(pipeline, pipeline.run())
    spare, relative = spare_episode
    other = pipeline.snapshot / "the-night-kitchen-s01.lmdb"
    untouched = (other.read_bytes(), other.stat().st_mtime_ns)
    target = pipeline.media / relative
    shutil.copyfile(spare, target)
    new_id = (
        "harbour-lights-s01e03" if relative.startswith("Harbour") else "the-night-kitchen-s01e03"
    )
    season = new_id[:-3]

    report = pipeline.run()
    assert not report.failures, report.failures
    assert [r.partition for r in report.runs_of("video_job")] == [new_id]
    assert [r.partition for r in report.runs_of("season_snapshot_job")] == [season]
    assert new_id in shard_episodes(pipeline.snapshot, season)
    assert len(shard_episodes(pipeline.snapshot, season)) == 3
    if season != "the-night-kitchen-s01":
        assert (other.read_bytes(), other.stat().st_mtime_ns) == untouched
    assert (
        new_id
        in latest_materialization(pipeline.instance, "season_snapshot", season)
        .metadata["videos"]
        .value
    )  # type: ignore[operator]


def test_a_removed_episode_disappears_from_its_season_on_the_next_build(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    assert_fully_built(pipeline, pipeline.run())
    gone = open_catalog(pipeline.catalog_path).video("harbour-lights-s01e02")
    assert gone is not None
    clip = clip_of(pipeline.media, gone.source, tmp_path)
    assert match_with_cli(pipeline.snapshot, clip)["matches"][0]["episode_id"] == gone.episode_id
    (pipeline.media / gone.source).unlink()

    report = pipeline.run()
    assert not report.failures, report.failures
    assert report.runs_of("video_job") == []
    assert [r.partition for r in report.runs_of("season_snapshot_job")] == ["harbour-lights-s01"]
    assert report.deleted_partitions == {"videos": [gone.episode_id]}
    record = open_catalog(pipeline.catalog_path).video(gone.episode_id)
    assert record is not None and record.removed
    assert shard_episodes(pipeline.snapshot, "harbour-lights-s01") == ["harbour-lights-s01e01"]
    assert all(
        m["episode_id"] != gone.episode_id
        for m in match_with_cli(pipeline.snapshot, clip)["matches"]
    )


def test_a_corrupt_file_fails_its_own_partition_and_leaves_the_rest_alone(
    pipeline: Pipeline,
) -> None:
    assert_fully_built(pipeline, pipeline.run())
    shard = pipeline.snapshot / "harbour-lights-s01.lmdb"
    shard_before = shard.read_bytes()
    bad = pipeline.media / "Harbour Lights" / "Season 01" / "Harbour Lights - S01E03.mp3"
    bad.write_bytes(b"ID3" + bytes(range(256)) * 40)

    report = pipeline.run()
    (failed,) = report.failures
    assert (failed.job, failed.partition) == ("video_job", "harbour-lights-s01e03")
    assert "cannot decode Harbour Lights/Season 01/Harbour Lights - S01E03.mp3" in (
        failed.error or ""
    )
    assert report.runs_of("season_snapshot_job") == []
    assert shard.read_bytes() == shard_before
    status = pipeline.instance.get_status_by_partition(
        dg.AssetKey("raw_audio"), sorted(VIDEOS | {"harbour-lights-s01e03"}),
        pipeline.defs.resolve_asset_graph().get(dg.AssetKey("raw_audio")).partitions_def,  # type: ignore[arg-type]
    )  # fmt: skip
    assert status is not None
    assert status["harbour-lights-s01e03"] == dg.AssetPartitionStatus.FAILED
    assert {k for k, v in status.items() if v == dg.AssetPartitionStatus.MATERIALIZED} == VIDEOS
    # An unchanged bad file is not retried on every scan.
    assert pipeline.run().runs == []


def test_the_graph_materialises_with_postgres_instance_storage(
    media_root: Path,
    tmp_path: Path,
    postgres_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(postgres_instance.run_storage, PostgresRunStorage)
    assert isinstance(postgres_instance.event_log_storage, PostgresEventLogStorage)
    home = tmp_path / "citywok"
    monkeypatch.setenv("CITYWOK_BUCKET_URL", home.as_uri())
    p = Pipeline(media_root, home, artefact_store_for(os.environ), postgres_instance)
    assert_fully_built(p, p.run())
    assert p.run().runs == []
    for season in SEASONS:
        assert (
            latest_materialization(postgres_instance, "season_snapshot", season)
            .metadata["video_count"]
            .value
            == 2
        )


def test_the_graph_materialises_into_s3(
    media_root: Path,
    tmp_path: Path,
    seaweedfs: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "CITYWOK_BUCKET_URL": f"s3://{s3_bucket}/citywok",
        "CITYWOK_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }.items():
        monkeypatch.setenv(name, value)
    configured = artefact_store_for(os.environ)
    with (
        dg.build_resources({"artefacts": configured}) as built,  # EnvVars resolved, as in a run
        sqlite_instance(tmp_path / "dagster") as instance,
    ):
        store = built.artefacts
        assert isinstance(store.open(), S3BlobStore)
        p = Pipeline(media_root, tmp_path / "citywok", configured, instance)
        assert_fully_built(p, p.run())
        keys = store.list_keys()
        assert sorted(k for k in keys if k.startswith("shards/")) == sorted(
            f"shards/{s}.lmdb" for s in SEASONS
        )
        assert len([k for k in keys if k.startswith("raw_audio/")]) == len(VIDEOS)
        assert len([k for k in keys if k.startswith("fingerprints/")]) == len(VIDEOS)
        for season in SEASONS:
            assert (
                store.get(f"shards/{season}.lmdb") == (p.snapshot / f"{season}.lmdb").read_bytes()
            )
        meta = latest_materialization(instance, "raw_audio", "harbour-lights-s01e01").metadata
        assert (
            meta["artefact"].value
            == f"s3://{s3_bucket}/citywok/artefacts/raw_audio/harbour-lights-s01e01.flac"
        )
        # Re-materialising overwrites the same objects.
        assert (
            p.defs.resolve_job_def("video_job")
            .execute_in_process(instance=instance, partition_key="harbour-lights-s01e01")
            .success
        )
        assert store.list_keys() == keys
        with pytest.raises(BlobNotFoundError, match="no such object"):
            store.get("raw_audio/nope.flac")


def test_the_s3_store_is_refused_with_wrong_credentials(
    seaweedfs: S3Server, s3_bucket: str
) -> None:
    from botocore.exceptions import ClientError

    store = ArtefactStore(
        bucket_url=f"s3://{s3_bucket}/x",
        s3=S3Resource(endpoint_url=seaweedfs.endpoint_url, region_name="auto",
                      aws_access_key_id=seaweedfs.access_key, aws_secret_access_key="wrong"),
    )  # fmt: skip
    with pytest.raises(ClientError):
        store.put("a/b", b"x")
