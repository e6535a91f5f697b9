"""The Kubernetes Jobs that k8s_job_executor creates for the ingest and stats steps under AMEM_DEPLOYMENT=prod.

Built with dagster_k8s' own functions along the executor's path (K8sStepHandler._get_container_context and
launch_step): the run launcher of deployments/dagster.yaml, then the step's `dagster-k8s/config` op tags, then
construct_dagster_k8s_job. Only the embedding step may ask for a GPU.
"""

from __future__ import annotations

import kubernetes
import kubernetes_validate
import pytest
from dagster import DagsterRun, in_process_executor
from dagster._core.execution.api import create_execution_plan
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

from amem_dagster.definitions import build_definitions
from amem_dagster.settings import Settings
from tests.deployments.support import K8S_VERSION, k8s_run_launcher

GPU = "nvidia.com/gpu"
IMAGE = "registry.example.com/amem-dagster:0.1.0"
RUN_ID = "0f3c2a9e-5b7d-4c1e-9a8f-2d6b4e1c7a90"


def prod_definitions():
    return build_definitions(Settings.from_env({"AMEM_DEPLOYMENT": "prod", "AMEM_HOME": "/tmp/amem-unused"}))


def step_job(launcher, job_def, step_key: str) -> dict:
    """The step's V1Job as the API server would receive it (camelCase JSON)."""
    step = create_execution_plan(job_def).get_step_by_key(step_key)
    context = K8sContainerContext.create_for_run(DagsterRun(job_name=job_def.name, run_id=RUN_ID), launcher,
                                                 include_run_tags=False)
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
    job_name = f"dagster-step-{get_k8s_job_name(RUN_ID, step_key)}"
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, launcher),
        args=["dagster", "api", "execute_step"],
        job_name=job_name,
        pod_name=job_name,
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": job_def.name, "dagster/op": step_key, "dagster/run-id": RUN_ID},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": job_def.name},
                  {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}],
    )
    return kubernetes.client.ApiClient().sanitize_for_serialization(job)


def all_steps(defs) -> list[tuple[str, str]]:
    return [(name, step.key) for name in ("memory_ingest_job", "memory_stats_job")
            for step in create_execution_plan(defs.resolve_job_def(name)).steps]


def test_prod_selects_the_k8s_executor_and_local_keeps_in_process():
    assert prod_definitions().resolve_job_def("memory_ingest_job").executor_def is k8s_job_executor
    local = build_definitions(Settings.from_env({"AMEM_HOME": "/tmp/amem-unused"}))
    assert local.resolve_job_def("memory_ingest_job").executor_def is in_process_executor


def test_only_the_embedding_step_gets_a_gpu_pod(offline_amem_env, fake_kubeconfig):
    launcher = k8s_run_launcher(fake_kubeconfig)
    defs = prod_definitions()
    steps = all_steps(defs)
    assert ("memory_ingest_job", "memory_embeddings") in steps and ("memory_ingest_job", "memory_events") in steps
    for job_name, step_key in steps:
        job = step_job(launcher, defs.resolve_job_def(job_name), step_key)
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        # Every step pod asks for CPU and memory: its op tags, or the run launcher's run_k8s_config.
        assert {"cpu", "memory"} <= resources["requests"].keys(), step_key
        assert container["image"] == IMAGE
        assert pod["serviceAccountName"] == "amem-dagster"
        assert pod["securityContext"] == {"runAsNonRoot": True}
        assert {"amem-config"} == {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
        assert {"amem-secrets"} == {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e}
        gpu_toleration = [t for t in pod.get("tolerations", []) if t.get("key") == GPU]
        if step_key == "memory_embeddings":
            assert resources["limits"][GPU] == "1"
            assert resources["requests"] == {"cpu": "2", "memory": "6Gi"}
            assert gpu_toleration == [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        else:
            assert GPU not in resources.get("limits", {}) and GPU not in resources["requests"], step_key
            assert not gpu_toleration and "nodeSelector" not in pod, step_key
        assert kubernetes_validate.validate(job, K8S_VERSION, strict=True) == K8S_VERSION


def test_a_broken_step_job_fails_validation(offline_amem_env, fake_kubeconfig):
    """The validator is strict: an unknown field or a wrong type in a rendered Job is caught."""
    job = step_job(k8s_run_launcher(fake_kubeconfig), prod_definitions().resolve_job_def("memory_ingest_job"),
                   "memory_embeddings")
    job["spec"]["template"]["spec"]["nodeSelectors"] = {"typo": "true"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
