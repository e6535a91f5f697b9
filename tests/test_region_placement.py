"""Region placement through the real pipeline (Kafka → sensor → run → Postgres, pgvector, Milvus): an event's
region selects its Postgres schema (amem_<region>) and its Milvus collection (<prefix>_<region>); EU data never
lands in the US namespace or the other way round, and an event for an unknown region is dead-lettered."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from pymilvus import MilvusClient

from resources.dead_letters import ERROR_HEADER, SOURCE_HEADER, header
from resources.pg_schema import region_schema
from tests.amem_dagster.test_observability import Pipeline, tenants

pytestmark = pytest.mark.integration
REGIONS = ("eu", "us")


def _event(tenant: str, text: str, region: str | None) -> tuple[str, bytes]:
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "tenant_id": tenant, "agent_name": "planner", "event_type": "Obs", "text": text}
    if region is not None:
        body["region"] = region
    return event_id, json.dumps(body).encode()


@pytest.fixture(scope="module")
def placed(service_env, dagster_instance):
    """Two tenants with events in eu, in us and without a region (the default, eu), plus unknown regions."""
    pipeline = Pipeline.create(service_env, dagster_instance, prefix="region",
                               milvus_prefix=f"region_{uuid.uuid4().hex[:8]}")
    expected: dict[str, dict[str, set[str]]] = {}
    messages = []
    for tenant in tenants(2, "region"):
        expected[tenant] = {r: set() for r in REGIONS}
        for i in range(6):
            region = (None, "eu", "us")[i % 3]
            event_id, value = _event(tenant, f"{tenant} memory {i} for {region or 'the default'}", region)
            expected[tenant][region or "eu"].add(event_id)
            messages.append((tenant.encode(), value))
    unknown = [(t.encode(), _event(t, "somewhere else", region)[1])
               for t in expected for region in ("mars", "EU", "amem_us", "us ", "")]
    where = pipeline.produce([*messages, *unknown])
    result = pipeline.tick()
    pipeline.run_all(result)
    return {"pipeline": pipeline, "expected": expected, "unknown": where[len(messages):]}


def test_postgres_rows_live_only_in_their_regions_schema(placed):
    pipeline, expected = placed["pipeline"], placed["expected"]
    tenant_ids = list(expected)
    with pipeline.postgres.maintenance_transaction() as conn:
        for region in REGIONS:
            schema = region_schema(region)
            for table in ("memory_events", "memory_vectors"):
                rows = conn.execute(f"SELECT tenant_id, event_id::text, region FROM {schema}.{table}"
                                    " WHERE tenant_id = ANY(%s)", (tenant_ids,)).fetchall()
                for tenant in tenant_ids:
                    assert {e for t, e, _ in rows if t == tenant} == expected[tenant][region], (region, table)
                assert {r for _, _, r in rows} == {region}
    # The schemas are disjoint: nothing placed in one region appears in the other.
    for tenant in tenant_ids:
        assert not expected[tenant]["eu"] & expected[tenant]["us"]


def test_milvus_vectors_live_only_in_their_regions_collection(placed):
    pipeline, expected = placed["pipeline"], placed["expected"]
    milvus = pipeline.milvus
    client = MilvusClient(uri=milvus.uri)
    for region in REGIONS:
        name = milvus.collection_name(region)
        client.load_collection(name)
        for tenant in expected:
            # Read the whole collection for the tenant, without the region clause tenant_filter would add.
            rows = client.query(name, filter=f'tenant_id == "{tenant}"', output_fields=["event_id", "region"],
                                consistency_level="Strong")
            assert {r["event_id"] for r in rows} == expected[tenant][region], (region, tenant)
            assert {r["region"] for r in rows} == {region}
            assert milvus.count(tenant, region) == len(expected[tenant][region])


def test_a_search_in_one_region_never_returns_the_other_regions_memories(placed):
    pipeline, expected = placed["pipeline"], placed["expected"]
    tenant = next(iter(expected))
    with pipeline.postgres.tenant_transaction(tenant) as conn:
        eu_vector = conn.execute("SELECT embedding FROM amem_eu.memory_vectors WHERE tenant_id = %s LIMIT 1",
                                 (tenant,)).fetchone()[0]
    hits = pipeline.milvus.search(tenant, "us", eu_vector.to_numpy(), k=50)
    assert {h.event_id for h in hits} == expected[tenant]["us"]


def test_events_for_an_unknown_region_are_dead_lettered(placed):
    pipeline = placed["pipeline"]
    dead = {header(r, SOURCE_HEADER): header(r, ERROR_HEADER) for r in pipeline.read(pipeline.kafka.dlq_topic)}
    assert {pipeline.source(where) for where in placed["unknown"]} == set(dead)
    assert set(dead.values()) == {"unknown_region"}


def test_each_region_schema_refuses_rows_of_another_region(placed):
    """Defence in depth below the code: the region column of amem_eu can only say 'eu'."""
    pipeline, expected = placed["pipeline"], placed["expected"]
    tenant = next(iter(expected))
    for schema, other in (("amem_eu", "us"), ("amem_us", "eu")):
        with pytest.raises(psycopg.errors.CheckViolation), pipeline.postgres.tenant_transaction(tenant) as conn:
            conn.execute(f"INSERT INTO {schema}.memory_events (tenant_id, event_id, created_at, region, agent_name,"
                         " event_type, text) VALUES (%s, %s, now(), %s, 'a', 'Obs', 'x')",
                         (tenant, str(uuid.uuid4()), other))
