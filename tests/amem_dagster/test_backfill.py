"""Backfills per tenant: re-embedding tenant partitions through a real DagsterInstance with a new model."""

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus

from amem_dagster.cli.backfill import partition_ranges, run_backfill
from amem_dagster.definitions import build_definitions
from amem_dagster.events import MemoryEvent
from amem_dagster.settings import Settings, default_model_path
from assets.memory_writes import store_events
from resources import pg_memory
from resources.embedder import EmbedderResource
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow
from tests.kafka_topics import private_kafka

OLD_MODEL = "old-model-v1"
TEXTS = ["The user prefers window seats on long flights", "Invoice 42 was paid by bank transfer",
         "The build failed because a test timed out"]


def test_partition_ranges_group_neighbours_in_partition_order():
    order = ["a", "b", "c", "d", "e", "f"]
    assert partition_ranges(order, ["e", "a", "b", "d"]) == [["a", "b"], ["d", "e"]]
    assert partition_ranges(order, ["f"]) == [["f"]]
    assert partition_ranges(order, order) == [order]
    assert partition_ranges(order, ["c", "c"]) == [["c"]]
    with pytest.raises(ValueError, match="zz"):
        partition_ranges(order, ["a", "zz"])


@pytest.fixture(scope="module")
def stores(service_env):
    # Private topics: the announcements of this test's embeddings do not reach other tests' sensors.
    kafka = private_kafka(service_env, "bf")
    return (PostgresResource(dsn=service_env["AMEM_PG_DSN"]), MilvusResource(uri=service_env["AMEM_MILVUS_URI"]),
            kafka)


def _ingest_with_old_model(stores, tenant: str) -> list[MemoryEvent]:
    """Six events in two regions, stored and embedded with a fake 'old model' in both vector stores."""
    postgres, milvus, _ = stores
    now = datetime.now(UTC)
    events = [MemoryEvent(event_id=str(uuid.uuid4()), tenant_id=tenant, agent_name="planner",
                          event_type="Observation", text=f"{TEXTS[i % 3]} ({i})", region=("eu", "us")[i % 2],
                          created_at=now - timedelta(hours=i), subject_id=f"subject-{i % 2}") for i in range(6)]
    assert store_events(postgres, {tenant: [(e, 0, i) for i, e in enumerate(events)]})[tenant]["new"] == 6
    vectors = np.random.default_rng(3).normal(size=(len(events), 384)).astype(np.float32)
    rows = [VectorRow(tenant, e.event_id, e.region, e.created_at, e.subject_id, OLD_MODEL, v)
            for e, v in zip(events, vectors, strict=True)]
    milvus.upsert(rows)
    with postgres.tenant_transaction(tenant) as conn:
        pg_memory.upsert_vectors(conn, rows)
    return events


def _pg_vectors(postgres, tenant) -> list[tuple[str, str]]:
    with postgres.tenant_transaction(tenant) as conn:
        return [(str(r[0]), r[1]) for region in ("eu", "us") for r in conn.execute(
            f"SELECT event_id, model FROM amem_{region}.memory_vectors WHERE tenant_id = %s", (tenant,))]


def _milvus_vectors(milvus, tenant) -> list[tuple[str, str]]:
    rows = []
    for region in ("eu", "us"):
        found = milvus._call(region, "query", output_fields=["event_id", "model"], consistency_level="Strong",
                             **milvus._where(tenant, region))
        rows += [(r["event_id"], r["model"]) for r in found]
    return rows


@pytest.fixture(scope="module")
def new_model(tmp_path_factory) -> str:
    """A "new model": the packaged weights under another path, so the model name differs and nothing downloads."""
    path = tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2-rev2"
    path.symlink_to(default_model_path(), target_is_directory=True)
    return str(path)


@pytest.fixture(scope="module")
def defs(service_env, stores, new_model):
    # PyTorch directly: a new model path would otherwise first be exported and calibrated for a graph backend
    # (where the embedder offers them), which costs far more than these tests.
    torch_only = {"backend": "torch"} if "backend" in EmbedderResource.model_fields else {}
    embedder = EmbedderResource(model=new_model, **torch_only)
    return build_definitions(Settings.from_env(service_env), resources={"kafka": stores[2], "embedder": embedder})


def test_backfill_of_two_tenant_partitions_replaces_vectors_with_the_new_model(stores, defs, new_model,
                                                                              dagster_instance):
    postgres, milvus, kafka = stores
    suffix = uuid.uuid4().hex[:8]
    tenants = [f"bf-{suffix}-a", f"bf-{suffix}-b"]
    events = {t: _ingest_with_old_model(stores, t) for t in tenants}
    dagster_instance.add_dynamic_partitions("tenants", tenants)

    runs = run_backfill(defs, dagster_instance, list(reversed(tenants)))
    assert len(runs) == 1, "two neighbouring partitions are one range, so one run"
    run = runs[0]
    assert run.success and (run.first, run.last) == tuple(tenants) and run.tenants == tenants
    assert run.events_embedded == 12 and run.model == new_model

    for tenant in tenants:
        expected = sorted(e.event_id for e in events[tenant])
        for store, vectors in (("pgvector", _pg_vectors(postgres, tenant)),
                               ("milvus", _milvus_vectors(milvus, tenant))):
            assert sorted(event_id for event_id, _ in vectors) == expected, f"{store}: exactly one vector per event"
            assert {model for _, model in vectors} == {new_model}, store

    # The run is recorded in the instance: its range tags, success, and one materialisation per tenant partition.
    record = dagster_instance.get_run_by_id(run.run_id)
    assert record.status == DagsterRunStatus.SUCCESS
    assert record.tags["dagster/asset_partition_range_start"] == tenants[0]
    assert record.tags["dagster/asset_partition_range_end"] == tenants[1]
    materialised = dagster_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("memory_embeddings"), asset_partitions=tenants), limit=10).records
    assert sorted(r.partition_key for r in materialised if r.run_id == run.run_id) == tenants
    checks = [e for e in dagster_instance.all_logs(run.run_id) if e.dagster_event
              and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(e.dagster_event.event_specific_data.passed for e in checks)

    # Idempotent: a second backfill with the same model embeds nothing and leaves one vector per event.
    again = run_backfill(defs, dagster_instance, tenants)
    assert [r.events_embedded for r in again] == [0] and again[0].success
    for tenant in tenants:
        assert len(_pg_vectors(postgres, tenant)) == len(_milvus_vectors(milvus, tenant)) == 6


def test_backfill_runs_again_while_a_run_hits_the_per_run_limit(stores, defs, new_model, dagster_instance,
                                                                 monkeypatch):
    """memory_embeddings takes at most `limit` events per tenant and region in a run; the backfill goes on until
    a run embeds fewer, so even a tenant larger than the limit ends fully re-embedded."""
    postgres, milvus, _ = stores
    tenant = f"bf-{uuid.uuid4().hex[:8]}-big"
    events = _ingest_with_old_model(stores, tenant)  # 3 events in each of eu and us
    dagster_instance.add_dynamic_partitions("tenants", [tenant])
    monkeypatch.setattr(pg_memory.pending_embeddings, "__defaults__", (2,))

    runs = run_backfill(defs, dagster_instance, [tenant])
    assert [r.events_embedded for r in runs] == [4, 2, 0] and all(r.success for r in runs)
    assert len({r.run_id for r in runs}) == 3
    expected = sorted(e.event_id for e in events)
    for vectors in (_pg_vectors(postgres, tenant), _milvus_vectors(milvus, tenant)):
        assert sorted(event_id for event_id, _ in vectors) == expected
        assert {model for _, model in vectors} == {new_model}
