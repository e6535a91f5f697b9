"""deployments/dagster.yaml and dagster.local.yaml loaded, unchanged, into real DagsterInstances whose storage is
the embedded Postgres: runs are recorded there, the queue's tag limits hold runs back, and the run launcher block
builds a real K8sRunLauncher."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes
import psycopg
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, QueuedRunCoordinator, job, op
from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from amem_dagster.cli import dagster_home
from tests.deployments.support import DEPLOYMENTS, k8s_run_launcher, run_launcher_config

pytestmark = pytest.mark.integration
DATABASE = "dagster_deployments_test"
RANGE = "dagster/asset_partition_range_start"


@op
def remember() -> int:
    return 42


@job
def deployment_smoke_job():
    remember()


@pytest.fixture(scope="module")
def embedded_pg(service_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A fresh database on the embedded server, and how to reach it: its unix socket directory and port."""
    socket_dir = parse_qs(urlsplit(service_env["AMEM_PG_DSN"]).query)["host"][0]
    (socket,) = Path(socket_dir).glob(".s.PGSQL.*[0-9]")
    admin = f"postgresql://postgres@/postgres?host={socket_dir}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    yield {"socket_dir": socket_dir, "port": socket.name.rsplit(".", 1)[1],
           "dsn": f"postgresql://postgres@/{DATABASE}?host={socket_dir}"}


@pytest.fixture
def prod_instance(embedded_pg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    """DAGSTER_HOME holding deployments/dagster.yaml byte for byte, DAGSTER_PG_* pointing at the embedded server.

    dagster-postgres writes the host into a URL (scheme://user@HOST:PORT/db), where a socket path cannot go; an
    empty DAGSTER_PG_HOST leaves the host out and libpq takes the socket directory from PGHOST instead."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOYMENTS / "dagster.yaml", home / "dagster.yaml")
    for key, value in {"DAGSTER_PG_HOST": "", "PGHOST": embedded_pg["socket_dir"],
                       "DAGSTER_PG_PORT": embedded_pg["port"], "DAGSTER_PG_USER": "postgres",
                       "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": DATABASE}.items():
        monkeypatch.setenv(key, value)
    instance = DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def stored_run(dsn: str, run_id: str) -> tuple[str, int]:
    """(status, number of event log rows) of a run, read straight from the Postgres tables."""
    with psycopg.connect(dsn) as conn:
        (status,) = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()
        (events,) = conn.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,)).fetchone()
    return status, events


def test_production_instance_records_runs_in_postgres(prod_instance: DagsterInstance, embedded_pg):
    assert isinstance(prod_instance.run_storage, PostgresRunStorage)
    assert isinstance(prod_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(prod_instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(prod_instance.run_coordinator, QueuedRunCoordinator)
    assert prod_instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 20
    assert prod_instance.run_monitoring_enabled and prod_instance.run_retries_max_retries == 1
    sensor_retention = prod_instance.get_tick_retention_settings(InstigatorType.SENSOR)
    assert sensor_retention[TickStatus.SKIPPED] == 1 and sensor_retention[TickStatus.FAILURE] == 30
    assert prod_instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SUCCESS] == 90

    result = deployment_smoke_job.execute_in_process(instance=prod_instance)
    assert result.success and result.output_for_node("remember") == 42
    assert prod_instance.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS
    status, events = stored_run(embedded_pg["dsn"], result.run_id)
    assert status == "SUCCESS" and events > 0


def test_queue_tag_limits_hold_runs_back(prod_instance: DagsterInstance):
    """The daemon's own dequeue pass over runs stored in Postgres, with the limits of dagster.yaml."""
    ingest = {"amem/gpu": "true", "dagster/sensor_name": "memory_events_sensor"}
    # Queued runs name their code location: here the gRPC server the Helm chart runs for this project.
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(GrpcServerCodeLocationOrigin(
        host="amem-dagster", port=3030, location_name="amem_dagster"), "__repository__"), "memory_ingest_job")

    def run(status, **tags):
        return create_run_for_test(prod_instance, job_name="memory_ingest_job", status=status, tags=tags,
                                   remote_job_origin=origin).run_id

    started = [run(DagsterRunStatus.STARTED, **{RANGE: f"tenant-{t}"}, **ingest) for t in "abcd"]
    queued = {
        "fifth_gpu_run": run(DagsterRunStatus.QUEUED, **{RANGE: "tenant-e"}, **ingest),
        "busy_range": run(DagsterRunStatus.QUEUED, **{RANGE: "tenant-a"}),
        "sensor_ingest_without_gpu_tag": run(DagsterRunStatus.QUEUED, **{
            RANGE: "tenant-f", "dagster/sensor_name": "memory_events_sensor"}),
        "free_range": run(DagsterRunStatus.QUEUED, **{RANGE: "tenant-g"}),
        "one_tenant": run(DagsterRunStatus.QUEUED, **{"dagster/partition": "tenant-x"}),
        "same_tenant_again": run(DagsterRunStatus.QUEUED, **{"dagster/partition": "tenant-x"}),
        "first_backfill_run": run(DagsterRunStatus.QUEUED, **{"dagster/backfill": "bf1"}),
        "second_backfill_run": run(DagsterRunStatus.QUEUED, **{"dagster/backfill": "bf2"}),
        "third_backfill_run": run(DagsterRunStatus.QUEUED, **{"dagster/backfill": "bf3"}),
    }
    try:
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=5)
        dequeued = {r.run_id for r in daemon._get_runs_to_dequeue(  # noqa: SLF001 - the daemon's decision itself
            prod_instance, prod_instance.get_concurrency_config(), fixed_iteration_time=None)}
        assert {name for name, run_id in queued.items() if run_id in dequeued} == {
            "free_range", "one_tenant", "first_backfill_run", "second_backfill_run"}
    finally:
        for run_id in [*started, *queued.values()]:
            prod_instance.delete_run(run_id)


def test_run_launcher_block_is_a_valid_k8s_run_launcher(fake_kubeconfig: Path):
    block = run_launcher_config()
    assert (block["module"], block["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), block["config"])
    assert checked.success, checked.errors
    assert checked.value["load_incluster_config"] is True
    # In a pod the launcher reads the service account token; here only a kubeconfig exists, so swap that in.
    launcher = k8s_run_launcher(fake_kubeconfig)
    assert isinstance(launcher, K8sRunLauncher)
    assert (launcher.job_namespace, launcher.service_account_name) == ("amem", "amem-dagster")
    assert (launcher.instance_config_map, launcher.postgres_password_secret) == (
        "amem-dagster-instance", "dagster-postgresql-secret")
    assert launcher.env_config_maps == ["amem-config"] and launcher.env_secrets == ["amem-secrets"]
    assert launcher.fail_pod_on_run_failure is True


def test_run_launcher_needs_a_cluster_outside_one(monkeypatch: pytest.MonkeyPatch):
    """Why the test above swaps credentials: load_incluster_config only works inside a pod."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    block = run_launcher_config()
    from dagster._serdes import ConfigurableClassData

    with pytest.raises(kubernetes.config.ConfigException):
        ConfigurableClassData(block["module"], block["class"], yaml.safe_dump(block["config"])).rehydrate(
            as_type=K8sRunLauncher)


def test_local_instance_equals_amem_dev_config_and_records_runs(embedded_pg, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    local = yaml.safe_load((DEPLOYMENTS / "dagster.local.yaml").read_text())
    assert local == dagster_home.instance_config("unused", url_from_env=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOYMENTS / "dagster.local.yaml", home / "dagster.yaml")
    monkeypatch.setenv(dagster_home.URL_VARIABLE, dagster_home.sqlalchemy_url(embedded_pg["dsn"]))
    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 2
        result = deployment_smoke_job.execute_in_process(instance=instance)
        assert result.success
        assert stored_run(embedded_pg["dsn"], result.run_id)[0] == "SUCCESS"
    finally:
        instance.dispose()
