"""Postgres resource against the real embedded server: idempotent inserts, placement, RLS, vectors, search."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from amem_dagster.events import MemoryEvent
from resources import pg_memory
from resources.postgres import PostgresResource
from resources.records import VectorRow


@pytest.fixture(scope="module")
def pg(service_env) -> PostgresResource:
    return PostgresResource(dsn=service_env["AMEM_PG_DSN"], regions="eu,us")


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _event(tenant: str, *, region: str = "eu", text: str = "hello", created_at: datetime | None = None,
           subject: str | None = None, event_id: str | None = None) -> MemoryEvent:
    return MemoryEvent(event_id=event_id or str(uuid.uuid4()), tenant_id=tenant, agent_name="a", event_type="Obs",
                       text=text, region=region, created_at=created_at or datetime.now(UTC), subject_id=subject)


def _store(pg: PostgresResource, events: list[MemoryEvent]) -> int:
    for region in {e.region for e in events}:
        pg.ensure_partitions(region, {e.created_at.date() for e in events if e.region == region})
    with pg.tenant_transaction(events[0].tenant_id) as conn:
        return pg_memory.insert_events(conn, [(e, 0, i) for i, e in enumerate(events)])


def test_insert_is_idempotent_by_event_id_even_when_resent_with_a_new_timestamp(pg):
    tenant = _tenant()
    events = [_event(tenant, text=f"memory {i}") for i in range(5)]
    assert _store(pg, events) == 5
    assert _store(pg, events) == 0
    resent = _event(tenant, event_id=events[0].event_id, created_at=events[0].created_at + timedelta(seconds=3))
    assert _store(pg, [resent]) == 0
    with pg.tenant_transaction(tenant) as conn:
        assert pg_memory.count_tenant(conn, tenant, "eu") == (5, 0)


def test_events_land_in_their_region_schema_only(pg):
    tenant = _tenant()
    _store(pg, [_event(tenant, region="eu"), _event(tenant, region="us"), _event(tenant, region="us")])
    with pg.tenant_transaction(tenant) as conn:
        assert pg_memory.count_tenant(conn, tenant, "eu") == (1, 0)
        assert pg_memory.count_tenant(conn, tenant, "us") == (2, 0)


def test_old_events_get_their_own_daily_partition(pg):
    tenant = _tenant()
    old = datetime.now(UTC) - timedelta(days=300)
    _store(pg, [_event(tenant, created_at=old)])
    with pg.maintenance_transaction() as conn:
        name = conn.execute("SELECT tableoid::regclass::text FROM amem_eu.memory_events WHERE tenant_id = %s",
                            (tenant,)).fetchone()[0]
    assert name == f"amem_eu.memory_events_p{old:%Y%m%d}"


def test_row_level_security_hides_and_protects_other_tenants(pg):
    a, b = _tenant(), _tenant()
    _store(pg, [_event(a, text="a secret")])
    _store(pg, [_event(b, text="b secret")])
    with pg.tenant_transaction(a) as conn:
        rows = conn.execute("SELECT tenant_id FROM amem_eu.memory_events WHERE tenant_id = %s", (b,)).fetchall()
        assert rows == []
        assert conn.execute("UPDATE amem_eu.memory_events SET text = 'x' WHERE tenant_id = %s", (b,)).rowcount == 0
        assert conn.execute("DELETE FROM amem_eu.memory_events WHERE tenant_id = %s", (b,)).rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege), pg.tenant_transaction(a) as conn:
        pg_memory.insert_events(conn, [(_event(b), 0, 0)])
    with pg.tenant_transaction(b) as conn:
        assert pg_memory.count_tenant(conn, b, "eu") == (1, 0)


def test_unscoped_app_role_sees_nothing(pg):
    tenant = _tenant()
    _store(pg, [_event(tenant)])
    with pg.pool().connection() as conn, conn.transaction():
        conn.execute("SET LOCAL ROLE amem_app")
        assert conn.execute("SELECT count(*) FROM amem_eu.memory_events").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT count(*) FROM amem_eu.memory_events_p{datetime.now(UTC):%Y%m%d}")


def test_vectors_upsert_replace_and_search_stays_in_tenant(pg):
    a, b = _tenant(), _tenant()
    rng = np.random.default_rng(7)
    ea = [_event(a, text=f"a {i}") for i in range(20)]
    eb = [_event(b, text=f"b {i}") for i in range(20)]
    _store(pg, ea)
    _store(pg, eb)
    vecs = rng.normal(size=(40, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def rows(events, offset, model):
        return [VectorRow(e.tenant_id, e.event_id, e.region, e.created_at, None, model, vecs[offset + i])
                for i, e in enumerate(events)]

    with pg.tenant_transaction(a) as conn:
        assert len(pg_memory.pending_embeddings(conn, a, "eu", "m1")) == 20
        pg_memory.upsert_vectors(conn, rows(ea, 0, "m1"))
        assert pg_memory.pending_embeddings(conn, a, "eu", "m1") == []
        assert len(pg_memory.pending_embeddings(conn, a, "eu", "m2")) == 20
        pg_memory.upsert_vectors(conn, rows(ea, 0, "m2"))
        assert pg_memory.count_tenant(conn, a, "eu") == (20, 20)
    with pg.tenant_transaction(b) as conn:
        pg_memory.upsert_vectors(conn, rows(eb, 20, "m1"))
    with pg.tenant_transaction(a) as conn:
        hits = pg_memory.search(conn, a, "eu", vecs[3], k=5)
        assert hits[0].event_id == ea[3].event_id and hits[0].score > 0.99 and hits[0].text == "a 3"
        # B's exact vector as the query: A's search must still answer only with A's rows.
        hits = pg_memory.search(conn, a, "eu", vecs[25], k=5)
        assert {h.event_id for h in hits} <= {e.event_id for e in ea}
    with pg.maintenance_transaction() as conn:
        counts = pg_memory.tenant_counts(conn, ["eu", "us"])
    assert counts[a] == {"events": 20, "pg_vectors": 20} and counts[b] == {"events": 20, "pg_vectors": 20}
