"""deployments/helm/values.yaml: shaped as the dagster/dagster chart expects, naming a code location that imports,
and rendering (the way the chart's templates do) the same instance settings as deployments/dagster.yaml."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from dagster import Definitions
from dagster._cli.api import grpc_command
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema

from amem_dagster.settings import Settings
from tests.deployments.support import DEPLOYMENTS, load_documents

VALUES = DEPLOYMENTS / "helm/values.yaml"
RELEASE = "amem"  # `helm install amem dagster/dagster`: the chart's fullname is then amem-dagster


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def chart_instance(values: dict) -> dict:
    """The instance dagster.yaml the chart's configmap-instance.yaml renders from these values (the sections we
    set), following its helpers/instance/*.tpl; the password always comes from DAGSTER_PG_PASSWORD."""
    pg, daemon, retention = values["postgresql"], values["dagsterDaemon"], values["retention"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    postgres_db = {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                   "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
                   "port": pg["service"]["port"], "params": pg["postgresqlParams"], "scheme": pg["postgresqlScheme"]}
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage",
                        "config": {"postgres_db": postgres_db}},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": {"postgres_db": postgres_db}},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": {"postgres_db": postgres_db}},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": daemon["runCoordinator"]["type"],
                            "config": {snake(k): v for k, v in queued.items()}},
        "run_launcher": {"module": "dagster_k8s", "class": values["runLauncher"]["type"], "config": {
            "load_incluster_config": launcher["loadInclusterConfig"],
            "job_namespace": launcher["jobNamespace"],
            "image_pull_policy": launcher["imagePullPolicy"],
            "service_account_name": values["global"]["serviceAccountName"],
            "dagster_home": "/opt/dagster/dagster_home",
            "instance_config_map": f"{RELEASE}-dagster-instance",
            "postgres_password_secret": values["global"]["postgresqlSecretName"],
            "env_config_maps": [c["name"] for c in launcher["envConfigMaps"]],
            "env_secrets": [s["name"] for s in launcher["envSecrets"]],
            "fail_pod_on_run_failure": launcher["failPodOnRunFailure"],
            "run_k8s_config": {snake(k): v for k, v in launcher["runK8sConfig"].items()},
        }},
        "run_monitoring": {snake(k): v for k, v in daemon["runMonitoring"].items()},
        "run_retries": {snake(k): v for k, v in daemon["runRetries"].items()},
        "sensors": {snake(k): v for k, v in daemon["sensors"].items()},
        "schedules": {snake(k): v for k, v in daemon["schedules"].items()},
        "retention": {kind: {"purge_after_days": retention[kind]["purgeAfterDays"]} for kind in ("sensor", "schedule")},
        "telemetry": values["telemetry"],
    }


def test_values_have_the_chart_shape(values: dict):
    schema = json.loads((Path(__file__).parent / "schemas/dagster-helm-values-subset.json").read_text())
    jsonschema.validate(values, schema)
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["dagsterDaemon"]["enabled"] and values["dagsterDaemon"]["runCoordinator"]["enabled"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"dagsterDaemon": {"runCoordinator": {"config": {"queuedRunCoordinator": {
            "tagConcurrencyLimits": [{"key": "amem/gpu", "limit": 4, "valu": "true"}]}}}}}, schema)


def test_user_deployment_serves_the_code_location(values: dict):
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"]
    # The chart runs `dagster api grpc -h 0.0.0.0 -p PORT <dagsterApiGrpcArgs>`: parse it with dagster's own CLI.
    args = ["-h", "0.0.0.0", "-p", str(deployment["port"]), *deployment["dagsterApiGrpcArgs"]]
    params = grpc_command.make_context("grpc", args).params
    assert params["module_name"] == "amem_dagster.definitions" and params["port"] == deployment["port"]
    assert isinstance(importlib.import_module(params["module_name"]).defs, Definitions)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert deployment["podSecurityContext"]["runAsUser"] == 10001  # the Dockerfile's USER


def test_env_sources_exist_and_make_it_prod(values: dict):
    docs = [d for f in (DEPLOYMENTS / "k8s").glob("*.yaml") for d in load_documents(f)]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for source in (deployment, launcher):
        assert {("ConfigMap", c["name"]) for c in source["envConfigMaps"]} <= names
        assert {("Secret", s["name"]) for s in source["envSecrets"]} <= names
    assert ("Secret", values["global"]["postgresqlSecretName"]) in names
    assert ("ServiceAccount", values["global"]["serviceAccountName"]) in names
    assert values["serviceAccount"] == {"create": False, "name": values["global"]["serviceAccountName"]}
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert Settings.from_env(configmap["data"]).deployment == "prod"


def test_chart_renders_the_instance_of_dagster_yaml(values: dict):
    rendered = chart_instance(values)
    checked = process_config(dagster_instance_config_schema(), rendered)
    assert checked.success, checked.errors
    instance = yaml.safe_load((DEPLOYMENTS / "dagster.yaml").read_text())
    for section in ("run_monitoring", "run_retries", "sensors", "schedules", "retention", "telemetry"):
        assert rendered[section] == instance[section], section
    for section in ("run_coordinator", "run_launcher"):
        assert rendered[section]["class"] == instance[section]["class"], section
        assert rendered[section]["config"] == instance[section]["config"], section
    # The same database: dagster.yaml reads it from the amem-config ConfigMap, the chart from its values.
    (configmap,) = load_documents(DEPLOYMENTS / "k8s/configmap.yaml")
    from_env = {key: (configmap["data"].get(v["env"], v["env"]) if isinstance(v, dict) else v)
                for key, v in instance["storage"]["postgres"]["postgres_db"].items()}
    chart_db = rendered["run_storage"]["config"]["postgres_db"]
    for key in ("hostname", "username", "db_name", "scheme"):
        assert chart_db[key] == from_env[key], key
    assert str(chart_db["port"]) == from_env["port"]
