"""The transcript asset through the real pipeline: tiny library, packaged tiny.en, SQLite instance."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.assets.partitions import GPU_OP_TAGS, transcript_key
from citywok_pipeline.catalog import open_catalog
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.resources import ArtefactStore, TranscriberResource
from citywok_pipeline.transcripts.artefact import unpack_transcript

from .conftest import SPARE, TINY, Pipeline, sqlite_instance

VIDEO = "harbour-lights-s01e01"


@pytest.fixture(scope="module")
def built(
    tiny_library_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """The tiny library run through the whole pipeline once for this module's tests."""
    tmp = tmp_path_factory.mktemp("transcripts")
    media = tmp / "media"
    shutil.copytree(tiny_library_source, media, ignore=shutil.ignore_patterns(f"*{SPARE}*"))
    home = tmp / "citywok"
    with sqlite_instance(tmp / "dagster") as instance:
        pipeline = Pipeline(media, home, ArtefactStore(bucket_url=home.as_uri()), instance)
        report = pipeline.run()
        assert not report.failures, report.failures
        yield pipeline


def transcript_records(pipeline: Pipeline, video: str) -> list[dg.EventLogRecord]:
    return list(
        pipeline.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("transcript"), asset_partitions=[video]),
            limit=10,
        ).records
    )


def data_version(record: dg.EventLogRecord) -> str | None:
    return record.asset_materialization.tags.get("dagster/data_version")  # type: ignore[union-attr]


def rematerialise(pipeline: Pipeline, video: str, defs: dg.Definitions | None = None) -> bool:
    job = (defs or pipeline.defs).resolve_job_def("video_job")
    result = job.execute_in_process(
        instance=pipeline.instance,
        partition_key=video,
        asset_selection=[dg.AssetKey("transcript")],
        raise_on_error=False,
    )
    return result.success


def test_the_pipeline_transcribes_every_video_with_metadata(built: Pipeline) -> None:
    pipeline = built
    videos = {v.episode_id for v in open_catalog(pipeline.catalog_path).videos()}
    assert len(videos) == 4
    for video in videos:
        record = transcript_records(pipeline, video)[0]
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}  # type: ignore[union-attr]
        assert (meta["model"], meta["backend"], meta["device"], meta["language"]) == (
            "tiny.en", "faster-whisper", "cpu", "en",
        )  # fmt: skip
        assert meta["duration_s"] == pytest.approx(TINY["duration_s"], abs=0.1)
        assert 0 < meta["real_time_factor"] < 5 and meta["transcribe_s"] > 0
        assert meta["segments"] >= 1 and meta["word_count"] >= 5, meta
        stored = unpack_transcript(pipeline.artefacts.get(transcript_key(video)), label=video)
        assert meta["data_version"] == record.asset_materialization.tags["dagster/data_version"]  # type: ignore[union-attr]
        assert (len(stored.segments), stored.word_count) == (meta["segments"], meta["word_count"])


def test_the_intro_music_is_not_transcribed(built: Pipeline) -> None:
    stored = unpack_transcript(built.artefacts.get(transcript_key(VIDEO)))
    # Every episode opens with intro_s of music only; the dialogue comes after it.
    first_word = stored.segments[0].words[0]
    assert first_word.start >= TINY["intro_s"] - 0.6, stored.segments[0]
    for segment in stored.segments:
        assert 0 <= segment.start <= segment.end <= stored.duration_s
        assert all(segment.start <= w.start <= w.end <= segment.end for w in segment.words)


def test_rematerialising_replaces_the_artefact(built: Pipeline) -> None:
    pipeline = built
    key = transcript_key(VIDEO)
    original = pipeline.artefacts.get(key)
    pipeline.artefacts.put(key, b"damaged")
    keys_before = pipeline.artefacts.list_keys()

    assert rematerialise(pipeline, VIDEO)

    assert pipeline.artefacts.get(key) == original
    assert pipeline.artefacts.list_keys() == keys_before
    latest, previous = transcript_records(pipeline, VIDEO)[:2]
    assert latest.storage_id > previous.storage_id
    assert data_version(latest) == data_version(previous)


def test_a_missing_model_path_fails_the_step_naming_the_path(
    built: Pipeline, tmp_path: Path
) -> None:
    pipeline = built
    before = transcript_records(pipeline, VIDEO)
    missing = tmp_path / "models" / "whisper-large-v3"
    defs = build_definitions(
        {**pipeline.resources, "transcriber": TranscriberResource(model_path=str(missing))}
    )
    job = defs.resolve_job_def("video_job")
    result = job.execute_in_process(
        instance=pipeline.instance,
        partition_key=VIDEO,
        asset_selection=[dg.AssetKey("transcript")],
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    assert str(missing) in description and "model not found" in description
    assert transcript_records(pipeline, VIDEO) == before  # the good one stays the latest
    (attempt,) = [e for e in result.all_events if e.event_type_value == "STEP_START"]  # no retry
    assert attempt.step_key == "transcript"


def test_the_transcript_step_runs_on_the_gpu_pool_queue_and_node() -> None:
    defs = build_definitions(resources_for({}))
    op = defs.resolve_assets_def("transcript").op
    assert op.pool == "gpu"
    assert op.tags["dagster-celery/queue"] == "gpu"
    k8s = GPU_OP_TAGS["dagster-k8s/config"]
    assert json.loads(op.tags["dagster-k8s/config"]) == k8s
    assert k8s["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}  # type: ignore[index]
    assert k8s["container_config"]["resources"]["requests"] == {"nvidia.com/gpu": "1"}  # type: ignore[index]
    assert (
        dg.AssetKey("transcript")
        in defs.resolve_job_def("video_job").asset_layer.selected_asset_keys
    )


def test_the_embedded_instance_runs_the_gpu_pool_one_step_at_a_time(tmp_path: Path) -> None:
    with sqlite_instance(tmp_path / "dagster") as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        # What a step claiming the pool does first: the unconfigured pool gets the default.
        instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1


def test_the_transcriber_is_configured_from_the_environment_only_when_set() -> None:
    default = resources_for({})["transcriber"]
    assert (default.backend, default.model_path, default.diarize_token) == ("auto", None, None)
    configured = resources_for(
        {
            "CITYWOK_ASR_BACKEND": "whisperx",
            "CITYWOK_ASR_MODEL_PATH": "/models/large-v3",
            "CITYWOK_ASR_ALIGN_MODEL_PATH": "/models/wav2vec2",
            "CITYWOK_HF_TOKEN": "hf_x",
        }
    )["transcriber"]
    # EnvVars, so the UI shows where the values come from and the token stays out of run config.
    assert configured.backend == dg.EnvVar("CITYWOK_ASR_BACKEND")
    assert configured.model_path == dg.EnvVar("CITYWOK_ASR_MODEL_PATH")
    assert configured.align_model_path == dg.EnvVar("CITYWOK_ASR_ALIGN_MODEL_PATH")
    assert configured.diarize_token == dg.EnvVar("CITYWOK_HF_TOKEN")
