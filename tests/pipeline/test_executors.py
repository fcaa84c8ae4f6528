"""The executor is configuration: CITYWOK_EXECUTOR. Kubernetes cannot run here (no cluster):
its executor and the GPU steps' pod config are checked as configuration only."""

from __future__ import annotations

import json

import pytest

from citywok_pipeline.assets.partitions import GPU_OP_TAGS
from citywok_pipeline.definitions import build_definitions, resources_for
from citywok_pipeline.executors import executor_for


@pytest.mark.parametrize(
    ("value", "name"),
    [(None, "multiprocess"), ("in_process", "in_process"), ("celery", "celery"), ("k8s", "k8s")],
)
def test_the_executor_follows_citywok_executor(value: str | None, name: str) -> None:
    env = {"CITYWOK_EXECUTOR": value} if value else {}
    assert executor_for(env).name == name


def test_an_unknown_executor_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="CITYWOK_EXECUTOR='slurm' is not one of multiprocess"):
        executor_for({"CITYWOK_EXECUTOR": "slurm"})


def test_the_definitions_run_on_the_configured_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYWOK_EXECUTOR", "celery")
    defs = build_definitions(resources_for({}))
    assert defs.resolve_job_def("video_job").executor_def.name == "celery"


def test_gpu_steps_go_to_the_gpu_queue_and_request_a_gpu_node_on_kubernetes() -> None:
    assert GPU_OP_TAGS["dagster-celery/queue"] == "gpu"
    k8s = GPU_OP_TAGS["dagster-k8s/config"]
    assert isinstance(k8s, dict)
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # As dagster-k8s reads the tag and the Kubernetes client builds the pod spec from it (no
    # cluster runs here: this checks the configuration only).
    import kubernetes
    from dagster_k8s.job import get_user_defined_k8s_config
    from dagster_k8s.models import k8s_model_from_dict

    parsed = get_user_defined_k8s_config({"dagster-k8s/config": json.dumps(k8s)})
    pod = k8s_model_from_dict(
        kubernetes.client.V1PodSpec, {"containers": [], **parsed.pod_spec_config}
    )
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [t.key for t in pod.tolerations] == ["nvidia.com/gpu"]
    executor = executor_for({"CITYWOK_EXECUTOR": "k8s", "CITYWOK_K8S_NAMESPACE": "media"})
    assert executor.name == "k8s"


def test_celery_redelivers_a_step_only_after_a_timeout_above_the_longest_step() -> None:
    import importlib.util

    from citywok_pipeline.executors import VISIBILITY_TIMEOUT_S, celery_settings

    from .conftest import REPO

    # A two-hour episode transcribed on the CPU takes well over an hour; the default is 12 h.
    assert VISIBILITY_TIMEOUT_S >= 6 * 3600
    executor = executor_for({"CITYWOK_EXECUTOR": "celery"})
    source = executor.apply_config_mapping({}).value["config"]["config_source"]
    assert source["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT_S
    assert source["task_acks_late"] is True and source["worker_prefetch_multiplier"] == 1
    # The workers' settings module (deploy/) says the same, and follows the override.
    spec = importlib.util.spec_from_file_location(
        "dagster_celery_config", REPO / "deploy" / "dagster_celery_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.broker_transport_options == source["broker_transport_options"]
    longer = celery_settings({"CITYWOK_CELERY_VISIBILITY_TIMEOUT_S": "90000"})
    assert longer["broker_transport_options"]["visibility_timeout"] == 90000
