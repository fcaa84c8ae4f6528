"""deploy/: what can be checked without Docker or a cluster (neither runs here): the files
parse, say what the cluster needs, and the Kubernetes manifests pass kubernetes-validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

DEPLOY = REPO / "deploy"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


def pipeline_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in compose["services"].items()
        if "CITYWOK_EXECUTOR" in s.get("environment", {})
    }


def test_the_compose_services_share_no_disk_and_reach_catalog_and_bucket_over_the_network(
    compose: dict[str, Any],
) -> None:
    services = pipeline_services(compose)
    assert {"code", "webserver", "daemon", "worker-cpu", "worker-gpu"} <= set(services)
    named = set(compose.get("volumes") or {})
    for name, service in services.items():
        env = service["environment"]
        assert env["CITYWOK_CATALOG_URL"].startswith("postgresql://"), name
        assert env["CITYWOK_BUCKET_URL"].split(":", 1)[0] in ("s3", "${CITYWOK_BUCKET_URL"), name
        # No named volume (a shared disk): only the read-only media library.
        for mount in service.get("volumes", []):
            source, _, target = str(mount).rpartition(":ro")[0].rpartition(":")
            assert source not in named, f"{name} mounts the shared volume {source}"
            assert target == "/media", f"{name}: {mount} (only the media library, read-only)"
    users = [n for n, s in compose["services"].items() for v in s.get("volumes", [])
             if str(v).split(":")[0] in named]  # fmt: skip
    assert len(users) == len(set(users))  # each named volume belongs to one service


def test_the_webserver_and_daemon_load_code_from_the_grpc_code_server(
    compose: dict[str, Any],
) -> None:
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    assert process_workspace_config(workspace).success
    [server] = workspace["load_from"]
    assert server["grpc_server"]["host"] == "code"
    code = compose["services"]["code"]["command"]
    assert f"-p {server['grpc_server']['port']}" in code and "code-server start" in code
    for name in ("webserver", "daemon"):
        assert "-w deploy/workspace.yaml" in compose["services"][name]["command"]


def test_the_gpu_worker_runs_an_image_with_whisperx_and_cuda_torch(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["worker-gpu"]
    assert gpu["build"]["target"] == "gpu" and "gpu" in gpu["command"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = {line.split()[-1]: i for i, line in enumerate(dockerfile.splitlines())
              if line.startswith("FROM ")}  # fmt: skip
    assert {"base", "cpu", "gpu"} <= set(stages)
    gpu_stage = dockerfile.split("AS gpu", 1)[1]
    assert "-c deploy/gpu/constraints.txt '.[gpu]'" in gpu_stage
    pins = (DEPLOY / "gpu" / "constraints.txt").read_text()
    assert "torch~=2.8" in pins  # whisperx's CUDA build of torch, from PyPI
    for name in ("worker-cpu", "code", "webserver", "daemon", "query"):
        assert compose["services"][name]["build"]["target"] == "cpu"


def test_the_kubernetes_manifests_validate_and_carry_the_settings_the_executor_names() -> None:
    import kubernetes_validate

    documents = load_all(DEPLOY / "k8s" / "citywok-env.yaml")
    for doc in documents:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert names == {("ConfigMap", "citywok-env"), ("Secret", "citywok-secrets")}
    from citywok_pipeline.executors import executor_for

    config = executor_for({"CITYWOK_EXECUTOR": "k8s", "CITYWOK_K8S_JOB_IMAGE": "img:1",
                           "CITYWOK_K8S_GPU_IMAGE": "img-gpu:1"})  # fmt: skip
    k8s = config.apply_config_mapping({}).value["config"]
    assert k8s["env_config_maps"] == ["citywok-env"] and k8s["env_secrets"] == ["citywok-secrets"]
    assert k8s["job_image"] == "img:1"
    assert k8s["per_step_k8s_config"]["transcript"]["container_config"]["image"] == "img-gpu:1"


def test_the_helm_values_name_a_user_code_deployment_and_the_k8s_run_launcher() -> None:
    import kubernetes_validate

    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "citywok_pipeline.definitions"]
    assert deployment["envConfigMaps"] == [{"name": "citywok-env"}]
    assert deployment["envSecrets"] == [{"name": "citywok-secrets"}]
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert launcher["config"]["k8sRunLauncher"]["envConfigMaps"] == [{"name": "citywok-env"}]
    # The pod parts of the values are Kubernetes objects: checked as a pod spec.
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "citywok-user-code"},
        "spec": {"volumes": deployment["volumes"], "containers": [{
            "name": "user-code", "image": deployment["image"]["repository"],
            "volumeMounts": deployment["volumeMounts"],
            "envFrom": [{"configMapRef": deployment["envConfigMaps"][0]},
                        {"secretRef": deployment["envSecrets"][0]}],
        }]},
    }  # fmt: skip
    kubernetes_validate.validate(pod, "1.30", strict=True)
