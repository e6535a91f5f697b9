"""The lifecycle as Dagster runs it: the region-partitioned purge asset, forget_subject_job and the schedule."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from dagster import AssetKey, AssetRecordsFilter, DefaultScheduleStatus, build_schedule_context

from amem_dagster.definitions import build_definitions
from amem_dagster.events import MemoryEvent
from amem_dagster.retention import purge_region
from amem_dagster.settings import Settings
from assets.memory_writes import store_events
from resources import pg_lifecycle, pg_memory
from resources.kafka import read_from
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow
from tests.kafka_topics import private_kafka


@pytest.fixture(scope="module")
def stores(service_env):
    kafka = private_kafka(service_env, "lj")
    return (PostgresResource(dsn=service_env["AMEM_PG_DSN"]), MilvusResource(uri=service_env["AMEM_MILVUS_URI"]),
            kafka)


@pytest.fixture(scope="module")
def defs(service_env, stores):
    return build_definitions(Settings.from_env(service_env), resources={"kafka": stores[2]})


def _load(stores, tenant, spec):
    """spec: (region, age, subject) triples; events with random vectors in both vector stores."""
    postgres, milvus, _ = stores
    now = datetime.now(UTC)
    events = [MemoryEvent(event_id=str(uuid.uuid4()), tenant_id=tenant, agent_name="a", event_type="Observation",
                          text=f"memory {i}", region=region, created_at=now - age, subject_id=subject)
              for i, (region, age, subject) in enumerate(spec)]
    store_events(postgres, {tenant: [(e, 0, i) for i, e in enumerate(events)]})
    vectors = np.random.default_rng(5).normal(size=(len(events), 384)).astype(np.float32)
    rows = [VectorRow(tenant, e.event_id, e.region, e.created_at, e.subject_id, "m", v)
            for e, v in zip(events, vectors, strict=True)]
    milvus.upsert(rows)
    with postgres.tenant_transaction(tenant) as conn:
        pg_memory.upsert_vectors(conn, rows)
    return events


def _held(stores, tenant, region):
    postgres, milvus, _ = stores
    with postgres.tenant_transaction(tenant) as conn:
        events, vectors = pg_memory.count_tenant(conn, tenant, region)
    return events, vectors, milvus.count(tenant, region)


def test_purge_asset_materialises_one_region_with_its_metadata(stores, defs, dagster_instance):
    postgres, milvus, _ = stores
    purge_region(postgres, milvus, "eu", 90, actor="test cleanup")  # start from a region with nothing expired
    tenant = f"pj-{uuid.uuid4().hex[:8]}"
    day = timedelta(days=1)
    _load(stores, tenant, [("eu", 200 * day, None), ("eu", 100 * day, None), ("eu", 95 * day, "s"),
                           ("eu", 10 * day, None), ("us", 100 * day, None)])

    job = defs.resolve_job_def("gdpr_purge_job")
    result = job.execute_in_process(instance=dagster_instance, partition_key="eu")
    assert result.success
    assert _held(stores, tenant, "eu") == (1, 1, 1), "only the event inside eu's 90 days stays"
    assert _held(stores, tenant, "us") == (1, 1, 1), "another region is another partition, untouched"

    records = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("expired_memory_purge"), asset_partitions=["eu"]), limit=1).records
    assert records and records[0].run_id == result.run_id
    metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    assert metadata["region"] == "eu" and metadata["retention_days"] == 90
    cutoff = datetime.fromtimestamp(metadata["cutoff"], UTC)
    assert abs(cutoff - (datetime.now(UTC) - 90 * day)) < timedelta(minutes=5)
    assert (metadata["removed_pg_events"], metadata["removed_pg_vectors"], metadata["removed_milvus_vectors"]) \
        == (3, 3, 3)
    assert metadata["verified_nothing_older"] is True
    assert metadata["partitions_dropped"] >= 3, "each expired day's event partition is dropped"
    assert metadata["rows_deleted"] >= 3, "the expired vectors are row-deleted (hash partitions hold every age)"

    again = job.execute_in_process(instance=dagster_instance, partition_key="eu")
    metadata = {k: v.value for k, v in again.asset_materializations_for_node("expired_memory_purge")[0]
                .metadata.items()}
    assert (metadata["removed_pg_events"], metadata["removed_pg_vectors"], metadata["removed_milvus_vectors"]) \
        == (0, 0, 0), "a second purge removes nothing"


def test_forget_subject_job_erases_the_subject_from_run_config(stores, defs, dagster_instance):
    postgres, milvus, kafka = stores
    tenant = f"fj-{uuid.uuid4().hex[:8]}"
    hour = timedelta(hours=1)
    _load(stores, tenant, [(r, i * hour, s) for i, (r, s) in enumerate(
        [("eu", "alice"), ("us", "alice"), ("eu", "bob"), ("us", "bob"), ("eu", None)])])

    result = defs.resolve_job_def("forget_subject_job").execute_in_process(
        instance=dagster_instance,
        run_config={"ops": {"forget_subject": {"config": {"tenant_id": tenant, "subject_id": "alice"}}}})
    assert result.success
    assert result.output_for_node("forget_subject") == {"pg_vectors": 2, "pg_events": 2, "milvus_vectors": 2}
    with postgres.tenant_transaction(tenant) as conn:
        assert pg_lifecycle.count_subject_rows(conn, tenant, "alice", ("eu", "us")) == 0
        assert pg_lifecycle.count_subject_rows(conn, tenant, "bob", ("eu", "us")) == 4
    assert sum(milvus.count(tenant, r, subject_id="alice") for r in ("eu", "us")) == 0
    assert sum(milvus.count(tenant, r, subject_id="bob") for r in ("eu", "us")) == 2
    assert sum(_held(stores, tenant, r)[0] for r in ("eu", "us")) == 3

    consumer = kafka.consumer()
    records, _ = read_from(consumer, kafka.erasures_topic, {0: 0}, max_messages=100, deadline=time.monotonic() + 10)
    consumer.close()
    assert [r.key for r in records] == [f"{tenant}/alice".encode()]
    with postgres.maintenance_transaction() as conn:
        actor, details = conn.execute("SELECT actor, details::text FROM amem.audit_log WHERE action = 'erasure'"
                                      " AND tenant_id = %s", (tenant,)).fetchone()
    assert actor == f"dagster run {result.run_id}" and "alice" not in details


@pytest.mark.parametrize(("deployment", "status"), [("local", DefaultScheduleStatus.STOPPED),
                                                    ("prod", DefaultScheduleStatus.RUNNING)])
def test_purge_schedule_requests_one_run_per_region_and_is_on_only_in_prod(deployment, status, dagster_instance):
    settings = Settings.from_env({"AMEM_HOME": "/tmp/unused", "AMEM_DEPLOYMENT": deployment,
                                  "AMEM_REGIONS": "eu,us,apac"})
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("gdpr_purge_schedule")
    assert schedule.default_status == status
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 3 * * *", "UTC")
    assert schedule.job_name == "gdpr_purge_job"

    keys = {}
    for day in (datetime(2026, 3, 1, 3, 30, tzinfo=UTC), datetime(2026, 3, 2, 3, 30, tzinfo=UTC)):
        with build_schedule_context(instance=dagster_instance, scheduled_execution_time=day,
                                    repository_def=defs.get_repository_def()) as context:
            requests = list(schedule.evaluate_tick(context).run_requests)
        assert sorted(r.partition_key for r in requests) == ["apac", "eu", "us"]
        keys[day] = {r.run_key for r in requests}
        assert len(keys[day]) == 3, "distinct run keys per region"
    assert not set.intersection(*keys.values()), "another day, other run keys"
