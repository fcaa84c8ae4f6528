"""The code location: it loads, and the graph is what the design says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from citywok_pipeline.artefacts import params_version
from citywok_pipeline.assets.partitions import (
    FINGERPRINTS_CODE_VERSION,
    PARAMS,
    SNAPSHOT_CODE_VERSION,
)
from citywok_pipeline.blobstore import LocalBlobStore, S3BlobStore
from citywok_pipeline.definitions import artefact_store_for, build_definitions, defs, resources_for
from citywok_pipeline.resources import ArtefactStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return build_definitions(resources_for({}))


def test_dagster_validates_the_code_location(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "citywok_pipeline.definitions"],
        cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_the_lazy_definitions_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYWOK_BUCKET_URL", raising=False)
    loaded = defs()
    assert isinstance(loaded, dg.Definitions)
    assert isinstance(loaded.resources["artefacts"], ArtefactStore)


def test_the_asset_graph_has_the_expected_assets_partitions_and_lineage(
    definitions: dg.Definitions,
) -> None:
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "source_media", "raw_audio", "fingerprints", "transcript", "segment_embeddings",
        "season_snapshot", "published_version", "youtube_listing",
    }  # fmt: skip
    unpartitioned = {"published_version", "youtube_listing"}
    assert all(graph.get(dg.AssetKey(k)).partitions_def is None for k in unpartitioned)
    parts = {k: graph.get(dg.AssetKey(k)).partitions_def for k in keys - unpartitioned}
    assert {k: p.name for k, p in parts.items()} == {  # type: ignore[union-attr]
        "source_media": "videos", "raw_audio": "videos", "fingerprints": "videos",
        "transcript": "videos", "segment_embeddings": "videos", "season_snapshot": "seasons",
    }  # fmt: skip
    parents = {k: {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys} for k in keys}
    assert parents == {
        "source_media": set(), "raw_audio": {"source_media"}, "fingerprints": {"raw_audio"},
        "transcript": {"raw_audio"}, "segment_embeddings": {"transcript"},
        "season_snapshot": {"fingerprints", "segment_embeddings"},
        "published_version": {"season_snapshot"}, "youtube_listing": set(),
    }  # fmt: skip
    assert not graph.get(dg.AssetKey("source_media")).is_materializable
    assert graph.get(dg.AssetKey("source_media")).is_observable


def test_seasons_depend_on_videos_through_no_identity_mapping(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    mapping = graph.get_partition_mapping(
        dg.AssetKey("season_snapshot"), dg.AssetKey("fingerprints")
    )
    assert isinstance(mapping, dg.AllPartitionMapping)


def test_the_shard_check_is_blocking_and_the_published_version_has_its_checks(
    definitions: dg.Definitions,
) -> None:
    graph = definitions.resolve_asset_graph()
    checks = {(c.asset_key.to_user_string(), c.name): c for c in graph.asset_check_keys}
    assert set(checks) == {
        ("season_snapshot", "season_snapshot_verifies"),
        ("published_version", "published_version_is_current"),
    }
    assert graph.get_check_spec(checks["season_snapshot", "season_snapshot_verifies"]).blocking


def test_every_asset_has_a_one_sentence_description(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description or ""
        assert description.endswith(".") and description.count(". ") == 0, (key, description)


def test_code_versions_follow_the_fingerprint_params(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    assert graph.get(dg.AssetKey("fingerprints")).code_version == FINGERPRINTS_CODE_VERSION
    assert graph.get(dg.AssetKey("season_snapshot")).code_version == SNAPSHOT_CODE_VERSION
    assert params_version(PARAMS) in FINGERPRINTS_CODE_VERSION
    assert f"{PARAMS.sample_rate}hz" in graph.get(dg.AssetKey("raw_audio")).code_version


def test_jobs_sensors_schedules_and_executor_are_defined(definitions: dg.Definitions) -> None:
    assert definitions.resolve_job_def("video_job")
    season_job = definitions.resolve_job_def("season_snapshot_job")
    assert "season_snapshot_season_snapshot_verifies" in {n.name for n in season_job.nodes}
    for name in ("media_scan_sensor", "season_snapshot_sensor"):
        assert definitions.resolve_sensor_def(name)
    for name in ("video_catch_up_sensor", "youtube_uploads_sensor"):
        assert definitions.resolve_sensor_def(name)
    # The names the README gives, not the ones Dagster would derive from the jobs.
    assert {s.name for s in definitions.schedules} >= {"prune_versions_schedule"}
    assert definitions.executor is dg.multiprocess_executor


def test_the_environment_picks_the_artefact_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CITYWOK_HOME", str(tmp_path))
    default = artefact_store_for({}).open()
    assert isinstance(default, LocalBlobStore) and default.root == tmp_path / "artefacts"
    env = {"CITYWOK_BUCKET_URL": "file:///srv/bucket"}
    monkeypatch.setenv("CITYWOK_BUCKET_URL", env["CITYWOK_BUCKET_URL"])
    with dg.build_resources({"artefacts": artefact_store_for(env)}) as built:
        assert built.artefacts.open().url == "file:///srv/bucket/artefacts"
    env = {"CITYWOK_BUCKET_URL": "s3://b/p", "CITYWOK_S3_ENDPOINT_URL": "http://x"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with dg.build_resources({"artefacts": artefact_store_for(env)}) as built:
        s3 = built.artefacts.open()
        assert isinstance(s3, S3BlobStore) and s3.url == "s3://b/p/artefacts"
        assert s3.settings.region == "auto"  # R2's region, from the one rule
    with pytest.raises(ValueError, match=r"CITYWOK_BUCKET_URL.*ftp://nope"):
        artefact_store_for({"CITYWOK_BUCKET_URL": "ftp://nope"})


def test_importing_the_package_reads_no_environment() -> None:
    code = (
        "import os, sys\n"
        "class Spy(dict):\n"
        "    def get(self, k, d=None):\n"
        "        if k.startswith('CITYWOK'): sys.exit('read ' + k)\n"
        "        return super().get(k, d)\n"
        "    def __getitem__(self, k):\n"
        "        if k.startswith('CITYWOK'): sys.exit('read ' + k)\n"
        "        return super().__getitem__(k)\n"
        "os.environ = Spy(os.environ)\n"
        "import citywok_pipeline.definitions, citywok_pipeline.assets, citywok_pipeline.sensors\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_instance_files_are_valid(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    from dagster._core.instance.config import dagster_instance_config

    prod = tmp_path / "prod"
    prod.mkdir()
    (prod / "dagster.yaml").write_text((REPO / "deploy" / "dagster-postgres.yaml").read_text())
    config, _ = dagster_instance_config(str(prod))
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["run_retries"]["enabled"] and config["concurrency"]["pools"]["default_limit"] >= 1


def test_citywok_catalog_url_puts_the_catalog_in_postgres(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from citywok_pipeline.catalog import PostgresCatalog, SqliteCatalog

    monkeypatch.setenv("CITYWOK_HOME", str(tmp_path))
    assert isinstance(resources_for({})["catalog"].open(), SqliteCatalog)
    url = "postgresql://citywok:pw@db.internal:5432/citywok"
    monkeypatch.setenv("CITYWOK_CATALOG_URL", url)
    configured = resources_for({"CITYWOK_CATALOG_URL": url})["catalog"]
    with dg.build_resources({"catalog": configured}) as built:
        catalog = built.catalog.open()
        assert isinstance(catalog, PostgresCatalog)
        assert catalog.name == "postgresql://citywok@db.internal:5432/citywok"


@pytest.mark.parametrize(("bucket_url", "kind"), [("", "folder"), ("s3://media/citywok", "s3")])
def test_published_version_shows_the_storage_it_is_configured_for(
    bucket_url: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CITYWOK_BUCKET_URL", raising=False)
    if bucket_url:
        monkeypatch.setenv("CITYWOK_BUCKET_URL", bucket_url)
    graph = build_definitions(resources_for({})).resolve_asset_graph()
    assert graph.get(dg.AssetKey("published_version")).kinds == {kind}
