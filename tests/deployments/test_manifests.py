"""Every YAML file in deployments/ is checked: Kubernetes objects against the 1.30 schema (strict), Strimzi topics
and kustomizations against JSON schemas, and the names that tie them to the code and to dagster.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster_k8s
import jsonschema
import kubernetes_validate
import pytest
import yaml

from amem_dagster import settings as settings_module
from amem_dagster.settings import DLQ_TOPIC, EMBEDDINGS_TOPIC, ERASURES_TOPIC, EVENTS_TOPIC, Settings
from resources.kafka import KafkaResource
from tests.deployments.support import DEPLOYMENTS, K8S_VERSION, ROOT, load_documents, run_launcher_config

SCHEMAS = Path(__file__).parent / "schemas"
# Not Kubernetes objects: each has its own test module.
INSTANCE_FILES = {"dagster.yaml": "test_instance.py", "dagster.local.yaml": "test_instance.py",
                  "helm/values.yaml": "test_helm_values.py"}
CRD_SCHEMAS = {"KafkaTopic": "kafkatopic-v1beta2.json", "Kustomization": "kustomization.json"}
HOUR_MS = 3_600_000


def manifest_files() -> list[Path]:
    files = sorted([*DEPLOYMENTS.rglob("*.yaml"), *DEPLOYMENTS.rglob("*.yml")])
    return [f for f in files if f.relative_to(DEPLOYMENTS).as_posix() not in INSTANCE_FILES]


def documents(kind: str) -> list[dict]:
    return [doc for f in manifest_files() for doc in load_documents(f) if doc.get("kind") == kind]


def crd_schema(kind: str) -> dict:
    return json.loads((SCHEMAS / CRD_SCHEMAS[kind]).read_text())


def test_every_file_is_covered():
    """Nothing in deployments/ escapes a test: YAML here or in INSTANCE_FILES, the rest in its own module."""
    others = {"README.md": "docs", "Dockerfile": "test_dockerfile.py", "Dockerfile.dockerignore": "test_dockerfile.py",
              "postgres/app-database.sql": "test_postgres_setup.py"}
    every = {f.relative_to(DEPLOYMENTS).as_posix() for f in DEPLOYMENTS.rglob("*") if f.is_file()}
    found = {f for f in every if f.endswith((".yaml", ".yml"))}
    assert every - found == set(others), "a new kind of file in deployments/ needs a test"
    assert set(INSTANCE_FILES) <= found
    assert {"k8s/rbac.yaml", "k8s/configmap.yaml", "k8s/secrets.template.yaml", "kafka/base/topics.yaml"} <= found
    for path in manifest_files():
        for doc in load_documents(path):
            assert "apiVersion" in doc and "kind" in doc, f"{path}: not a Kubernetes-style object"


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.relative_to(DEPLOYMENTS).as_posix())
def test_manifest_validates(path: Path):
    docs = load_documents(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if doc["kind"] in CRD_SCHEMAS:
            # Custom resources are not in the core OpenAPI schema that kubernetes-validate ships.
            jsonschema.validate(doc, crd_schema(doc["kind"]))
        else:
            assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


def test_validators_reject_mistakes():
    configmap = load_documents(DEPLOYMENTS / "k8s/configmap.yaml")[0]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**configmap, "data": {"N": 12}}, K8S_VERSION, strict=True)
    topic = load_documents(DEPLOYMENTS / "kafka/base/topics.yaml")[0]
    for broken in ({**topic, "spec": {**topic["spec"], "partitons": 3}},
                   {**topic, "spec": {**topic["spec"], "config": {"retention.ms": "1d"}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, crd_schema("KafkaTopic"))


def test_topics_match_the_code():
    topics = {t["spec"]["topicName"]: t["spec"] for t in load_documents(DEPLOYMENTS / "kafka/base/topics.yaml")}
    specs = KafkaResource(bootstrap_servers="unused:9092", events_partitions=12).topic_specs()
    assert set(topics) == set(specs) == {EVENTS_TOPIC, EMBEDDINGS_TOPIC, DLQ_TOPIC, ERASURES_TOPIC}
    for name, (partitions, config) in specs.items():
        assert topics[name]["partitions"] == partitions, name
        assert topics[name]["replicas"] == 3, name
        for key, value in config.items():
            assert topics[name]["config"][key] == value, (name, key)
    assert topics[EVENTS_TOPIC]["partitions"] == Settings.from_env({"AMEM_HOME": "/tmp/x"}).events_partitions == 12
    assert topics[EVENTS_TOPIC]["config"]["retention.ms"] == 24 * HOUR_MS
    assert topics[EMBEDDINGS_TOPIC]["config"]["retention.ms"] == 72 * HOUR_MS
    assert topics[DLQ_TOPIC]["config"]["retention.ms"] > topics[EMBEDDINGS_TOPIC]["config"]["retention.ms"]
    assert topics[ERASURES_TOPIC]["config"]["cleanup.policy"] == "compact"
    assert "retention.ms" not in topics[ERASURES_TOPIC]["config"]


def render_overlay(overlay: Path) -> list[dict]:
    """What `kustomize build` does with the fields our overlays use (namespace, labels, resources)."""
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    jsonschema.validate(kustomization, crd_schema("Kustomization"))
    docs: list[dict] = []
    for resource in kustomization["resources"]:
        target = (overlay / resource).resolve()
        docs += render_overlay(target) if target.is_dir() else load_documents(target)
    for doc in docs:
        if "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for label in kustomization.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


@pytest.mark.parametrize("region", sorted(p.name for p in (DEPLOYMENTS / "kafka/overlays").iterdir()))
def test_region_overlay_puts_the_same_topics_on_the_region_cluster(region: str):
    assert region in Settings.from_env({"AMEM_HOME": "/tmp/x"}).regions
    base = render_overlay(DEPLOYMENTS / "kafka/base")
    rendered = render_overlay(DEPLOYMENTS / "kafka/overlays" / region)
    assert [d["spec"] for d in rendered] == [d["spec"] for d in base]
    for doc in rendered:
        jsonschema.validate(doc, crd_schema("KafkaTopic"))
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == f"amem-kafka-{region}"
        assert doc["metadata"]["namespace"] == f"kafka-{region}"


# Which RBAC rule each Kubernetes API call of dagster_k8s needs: (API group, resource, verb).
API_CALL_RULES = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "read_namespaced_job": ("batch", "jobs", "get"),
    "read_namespaced_job_status": ("batch", "jobs/status", "get"),
    "list_namespaced_pod": ("", "pods", "list"),
    "read_namespaced_pod": ("", "pods", "get"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "read_namespaced_pod_log": ("", "pods/log", "get"),
    "list_namespaced_event": ("", "events", "list"),
}


def test_role_allows_every_call_dagster_k8s_makes():
    source = "\n".join(p.read_text() for p in Path(dagster_k8s.__file__).parent.glob("*.py")
                       if p.name not in {"pipes.py", "component.py", "test.py"})
    calls = set(re.findall(r"(?:batch_api|core_api)\.(\w+)\(", source))
    assert calls, "no Kubernetes API calls found in dagster_k8s: the scan is broken"
    unknown = calls - API_CALL_RULES.keys()
    assert not unknown, f"dagster_k8s calls {unknown}: add their rules to k8s/rbac.yaml and API_CALL_RULES"
    (role,) = documents("Role")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    missing = {API_CALL_RULES[c] for c in calls} - granted
    assert not missing, f"k8s/rbac.yaml misses {missing}"


def test_names_tie_together():
    launcher = run_launcher_config()["config"]
    (namespace,) = documents("Namespace")
    (account,) = documents("ServiceAccount")
    (binding,) = documents("RoleBinding")
    (role,) = documents("Role")
    (configmap,) = documents("ConfigMap")
    secrets = {s["metadata"]["name"]: s for s in documents("Secret")}
    assert launcher["job_namespace"] == namespace["metadata"]["name"] == account["metadata"]["namespace"]
    assert launcher["service_account_name"] == account["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert launcher["env_config_maps"] == [configmap["metadata"]["name"]]
    assert launcher["env_secrets"] == ["amem-secrets"] and "amem-secrets" in secrets
    assert "postgresql-password" in secrets[launcher["postgres_password_secret"]]["stringData"]
    assert all("REPLACE_ME" in v for s in secrets.values() for v in s["stringData"].values()), \
        "the Secret template must hold placeholders only"


def test_configmap_and_secret_configure_the_code_location():
    (configmap,) = documents("ConfigMap")
    env = {**configmap["data"], **{k: v for s in documents("Secret") for k, v in s["stringData"].items()}}
    # Every AMEM_* variable that amem_dagster/settings.py and resources/sets.py read.
    read = set(re.findall(r"AMEM_[A-Z_]+", Path(settings_module.__file__).read_text()
                          + (ROOT / "resources/sets.py").read_text()))
    assert read - env.keys() == set()
    settings = Settings.from_env(env)
    assert settings.deployment == "prod"
    assert settings.kafka_bootstrap and settings.pg_dsn and settings.milvus_uri
    assert settings.embed_model is None  # the baked-in model
    # deployments/dagster.yaml reads these from the same ConfigMap (the password from its Secret).
    instance = yaml.safe_load((DEPLOYMENTS / "dagster.yaml").read_text())
    pg_env = {v["env"] for v in instance["storage"]["postgres"]["postgres_db"].values() if isinstance(v, dict)}
    assert pg_env - {"DAGSTER_PG_PASSWORD"} <= configmap["data"].keys()
