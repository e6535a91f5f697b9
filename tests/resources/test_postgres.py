"""Postgres resource against the real embedded server: idempotent inserts (row by row and COPY batches), placement,
RLS, the tenant-hashed vectors table and its migration, vectors, search."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from psycopg import sql

from amem_dagster.events import MemoryEvent
from resources import pg_copy, pg_memory, pg_schema, pg_vector_table
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


def test_batches_go_through_copy_with_the_same_idempotence_as_single_rows(pg):
    tenant = _tenant()
    n = pg_copy.COPY_MIN_ROWS * 3
    events = [_event(tenant, text=f"batch {i}", region=("eu", "us")[i % 2]) for i in range(n)]
    # Resends inside the batch itself: same id within the window is one event, far apart are two (as row by row).
    resent = _event(tenant, event_id=events[0].event_id, created_at=events[0].created_at + timedelta(seconds=5))
    far = _event(tenant, event_id=events[2].event_id, created_at=events[2].created_at - timedelta(days=3))
    assert _store(pg, [*events, resent, far]) == n + 1
    assert _store(pg, [*events, resent, far]) == 0, "a replayed batch inserts nothing"
    with pg.tenant_transaction(tenant) as conn:
        assert pg_memory.count_tenant(conn, tenant, "eu")[0] + pg_memory.count_tenant(conn, tenant, "us")[0] == n + 1
        stored = conn.execute("SELECT text, source_offset, metadata FROM amem_us.memory_events"
                              " WHERE tenant_id = %s AND event_id = %s", (tenant, events[1].event_id)).fetchone()
    assert stored == ("batch 1", 1, {})

    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(n, 384)).astype(np.float32)
    rows = [VectorRow(e.tenant_id, e.event_id, e.region, e.created_at, None, "m1", vecs[i]) for i, e in enumerate(events)]
    # The same key twice in one batch: the last row wins, as it would row by row.
    replaced = VectorRow(tenant, events[0].event_id, "eu", events[0].created_at, "s", "m2", vecs[1])
    with pg.tenant_transaction(tenant) as conn:
        assert pg_memory.upsert_vectors(conn, [*rows, replaced]) == n + 1
        assert pg_memory.count_tenant(conn, tenant, "eu")[1] + pg_memory.count_tenant(conn, tenant, "us")[1] == n
        model, subject = conn.execute("SELECT model, subject_id FROM amem_eu.memory_vectors WHERE tenant_id = %s"
                                      " AND event_id = %s", (tenant, events[0].event_id)).fetchone()
        hits = pg_memory.search(conn, tenant, "us", vecs[5], k=3)
    assert (model, subject) == ("m2", "s")
    assert hits[0].event_id == events[5].event_id and hits[0].text == "batch 5" and hits[0].score > 0.999


def test_vectors_are_hash_partitioned_by_tenant_with_an_hnsw_index_the_search_can_use(pg):
    tenant = _tenant()
    _store(pg, [_event(tenant)])
    with pg.maintenance_transaction() as conn:
        assert pg_vector_table.partitioned_by(conn, "amem_eu", "memory_vectors") == "h"
        assert pg_vector_table.partitioned_by(conn, "amem_eu", "memory_events") == "r"
        bounds = [r[0] for r in conn.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'amem_eu.memory_vectors'::regclass ORDER BY 1")]
        assert len(bounds) == pg_vector_table.VECTOR_PARTITIONS
        assert all(f"modulus {pg_vector_table.VECTOR_PARTITIONS}," in b for b in bounds)
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'amem_eu'"
                             " AND indexname = 'memory_vectors_hnsw'").fetchone()[0]
        assert "USING hnsw" in index and "halfvec(384)" in index and "halfvec_cosine_ops" in index
    with pg.tenant_transaction(tenant) as conn:
        # Sorting forbidden, the only way to answer ORDER BY ... LIMIT is the HNSW index on the same expression.
        conn.execute("SET LOCAL enable_sort = off")
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + pg_memory.nearest_sql("eu", 384), {
            "q": np.ones(384, dtype=np.float32), "tenant": tenant, "k": 10}))
    assert "Order By: ((embedding)::halfvec(384) <=>" in plan, "an ordered (HNSW) index scan on the same expression"
    assert plan.count("Index Scan") == 1, "the tenant's partition only"
    assert "Sort" not in plan, plan


def test_schema_3_daily_vector_partitions_are_migrated_with_their_rows(pg):
    schema = "amem_migrate_test"
    with pg.owner_transaction() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"""CREATE TABLE {schema}.memory_vectors (tenant_id text NOT NULL, event_id uuid NOT NULL,
            created_at timestamptz NOT NULL, region text NOT NULL, subject_id text, model text NOT NULL,
            embedding vector(384) NOT NULL, embedded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, event_id, created_at)) PARTITION BY RANGE (created_at)""")
        conn.execute(f"CREATE TABLE {schema}.memory_vectors_p1 PARTITION OF {schema}.memory_vectors"
                     " FOR VALUES FROM ('2020-01-01') TO ('2020-01-02')")
        conn.execute(f"CREATE INDEX memory_vectors_hnsw ON {schema}.memory_vectors USING hnsw"
                     " (embedding vector_cosine_ops)")
        conn.execute(f"CREATE INDEX memory_vectors_subject ON {schema}.memory_vectors (tenant_id, subject_id)")
        for i in range(5):
            conn.execute(f"INSERT INTO {schema}.memory_vectors (tenant_id, event_id, created_at, region, model,"
                         " embedding) VALUES (%s, %s, '2020-01-01 12:00+00', 'eu', 'm', %s)",
                         (f"t{i}", uuid.uuid4(), np.full(384, i + 1, dtype=np.float32)))
        pg_vector_table.ensure_vectors(conn, schema, "eu", 384, m=16, ef=64, policy=pg_schema.tenant_policy())
        assert pg_vector_table.partitioned_by(conn, schema, "memory_vectors") == "h"
        assert conn.execute(f"SELECT count(*), count(DISTINCT tenant_id) FROM {schema}.memory_vectors"
                            ).fetchone() == (5, 5)
        names = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace",
                                            (schema,))}
        assert not {n for n in names if "range" in n or n == "memory_vectors_p1"}, "the old table is gone"
        assert {"memory_vectors_hnsw", "memory_vectors_created", "memory_vectors_subject"} <= names
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
