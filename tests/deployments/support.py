"""Shared by the deployment tests: the deployments/ tree, YAML documents, and offline stand-ins."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
K8S_VERSION = "1.30"

# Addresses that let the code location build its resources (EnvVars) without reaching any service.
OFFLINE_AMEM_ENV = {
    "AMEM_KAFKA_BOOTSTRAP": "kafka.invalid:9092",
    "AMEM_PG_DSN": "postgresql://amem@pg.invalid/amem",
    "AMEM_MILVUS_URI": "http://milvus.invalid:19530",
}


def load_documents(path: Path) -> list[dict]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def run_launcher_config(instance_yaml: Path = DEPLOYMENTS / "dagster.yaml") -> dict:
    """The run_launcher block of a dagster.yaml: {"module", "class", "config"}."""
    return yaml.safe_load(instance_yaml.read_text())["run_launcher"]


def k8s_run_launcher(kubeconfig: Path, instance_yaml: Path = DEPLOYMENTS / "dagster.yaml"):
    """The K8sRunLauncher of a dagster.yaml, built the way DagsterInstance builds it (ConfigurableClassData),
    with only the in-cluster credentials swapped for an offline kubeconfig."""
    from dagster._serdes import ConfigurableClassData
    from dagster_k8s import K8sRunLauncher

    block = run_launcher_config(instance_yaml)
    config = {**block["config"], "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return ConfigurableClassData(block["module"], block["class"], yaml.safe_dump(config)).rehydrate(
        as_type=K8sRunLauncher)
