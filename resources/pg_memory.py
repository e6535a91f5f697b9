"""Memory rows in Postgres: idempotent event inserts, the embedding backlog, pgvector upserts, search, counts.

Every function takes a connection from `PostgresResource.tenant_transaction` (or the maintenance one for the
cross-tenant counts) and names the tenant in its WHERE clauses too, so queries stay router queries on Citus.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from amem_dagster.events import MemoryEvent
from amem_dagster.observability import metrics
from resources import pg_copy, pg_vector_table
from resources.pg_schema import region_schema
from resources.records import SearchHit, VectorRow

# Only a re-sent event (same event_id, new Kafka message, no created_at) can differ in created_at; it is
# re-sent within moments, so the duplicate check looks one day either side and stays partition-pruned.
RESEND_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class StoredEvent:
    """An event read back for embedding."""

    event_id: str
    created_at: datetime
    region: str
    subject_id: str | None
    text: str


EVENT_COLUMNS = (("tenant_id", "text"), ("event_id", "uuid"), ("created_at", "timestamptz"), ("region", "text"),
                 ("agent_name", "text"), ("event_type", "text"), ("text", "text"), ("subject_id", "text"),
                 ("metadata", "jsonb"), ("trace_id", "text"), ("source_partition", "int4"), ("source_offset", "int8"))
VECTOR_COLUMNS = (("tenant_id", "text"), ("event_id", "uuid"), ("created_at", "timestamptz"), ("region", "text"),
                  ("subject_id", "text"), ("model", "text"), ("embedding", "vector"))


def insert_events(conn: psycopg.Connection, events: Sequence[tuple[MemoryEvent, int, int]]) -> int:
    """Insert (event, kafka partition, offset) rows not stored yet; returns how many were new."""
    inserted = 0
    by_region: dict[str, list[tuple]] = {}
    for event, partition, offset in _first_sendings(events):
        by_region.setdefault(event.region, []).append((
            event.tenant_id, uuid.UUID(event.event_id), event.created_at, event.region, event.agent_name,
            event.event_type, event.text, event.subject_id, Jsonb(event.metadata), event.trace_id, partition, offset))
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in EVENT_COLUMNS)
    for region, rows in by_region.items():
        fmt = {"s": sql.Identifier(region_schema(region)), "w": sql.Literal(RESEND_WINDOW), "cols": names}
        # A resent event (same id, another created_at) is already stored when a row of it lies in the window.
        not_stored = sql.SQL(
            """WHERE NOT EXISTS (
                   SELECT 1 FROM {s}.memory_events e
                   WHERE e.tenant_id = i.tenant_id AND e.event_id = i.event_id
                     AND e.created_at BETWEEN i.created_at - {w}::interval AND i.created_at + {w}::interval)
               ON CONFLICT DO NOTHING""").format(**fmt)
        with metrics.timed(metrics.STORE_WRITE_SECONDS, metrics.POSTGRES):
            if len(rows) >= pg_copy.COPY_MIN_ROWS:
                inserted += pg_copy.copy_insert(conn, "amem_events_in", EVENT_COLUMNS, rows, sql.SQL(
                    "INSERT INTO {s}.memory_events ({cols}) SELECT {cols} FROM amem_events_in i ").format(**fmt)
                    + not_stored)
            else:
                values = sql.SQL(", ").join(sql.SQL("%s::{}").format(sql.SQL(t)) for _, t in EVENT_COLUMNS)
                with conn.cursor() as cur:
                    cur.executemany(sql.SQL("INSERT INTO {s}.memory_events ({cols}) SELECT {cols} FROM "
                                            "(SELECT {v}) AS i ({cols}) ").format(v=values, **fmt) + not_stored, rows)
                    inserted += max(cur.rowcount, 0)
    metrics.wrote(metrics.POSTGRES, inserted)
    return inserted


def _first_sendings(events: Sequence[tuple[MemoryEvent, int, int]]) -> list[tuple[MemoryEvent, int, int]]:
    """Drop a batch's own resends (same region, tenant and event_id, created_at within the window of a kept one),
    as row-by-row inserts would: one INSERT ... SELECT does not see the rows it inserts itself."""
    kept: dict[tuple[str, str, str], list[datetime]] = {}
    out = []
    for item in events:
        event = item[0]
        seen = kept.setdefault((event.region, event.tenant_id, event.event_id), [])
        if not any(abs(event.created_at - at) <= RESEND_WINDOW for at in seen):
            seen.append(event.created_at)
            out.append(item)
    return out


def pending_embeddings(conn: psycopg.Connection, tenant_id: str, region: str, model: str,
                       limit: int = 100_000) -> list[StoredEvent]:
    """Events of the tenant in `region` with no vector from `model` yet (never embedded, or by another model)."""
    metrics.read(metrics.POSTGRES)
    rows = conn.execute(sql.SQL(
        """SELECT e.event_id::text, e.created_at, e.region, e.subject_id, e.text
           FROM {s}.memory_events e
           LEFT JOIN {s}.memory_vectors v
             ON v.tenant_id = e.tenant_id AND v.event_id = e.event_id AND v.created_at = e.created_at
            AND v.model = %(model)s
           WHERE e.tenant_id = %(tenant)s AND v.event_id IS NULL
           ORDER BY e.created_at
           LIMIT %(limit)s""").format(s=sql.Identifier(region_schema(region))),
        {"tenant": tenant_id, "model": model, "limit": limit}).fetchall()
    return [StoredEvent(*row) for row in rows]


def upsert_vectors(conn: psycopg.Connection, rows: Sequence[VectorRow]) -> int:
    """Insert or replace one vector per event: a re-embed with another model overwrites, never duplicates."""
    by_region: dict[str, dict[tuple, tuple]] = {}
    for r in rows:
        # Keyed by the primary key, last one wins: one INSERT may not update the same row twice.
        by_region.setdefault(r.region, {})[(r.tenant_id, r.event_id, r.created_at)] = (
            r.tenant_id, uuid.UUID(r.event_id), r.created_at, r.region, r.subject_id, r.model,
            np.asarray(r.embedding, dtype=np.float32))
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in VECTOR_COLUMNS)
    for region, group in by_region.items():
        fmt = {"s": sql.Identifier(region_schema(region)), "cols": names}
        upsert = sql.SQL(
            """ON CONFLICT (tenant_id, event_id, created_at) DO UPDATE
               SET model = EXCLUDED.model, embedding = EXCLUDED.embedding, subject_id = EXCLUDED.subject_id,
                   embedded_at = now()""")
        with metrics.timed(metrics.STORE_WRITE_SECONDS, metrics.PGVECTOR):
            if len(group) >= pg_copy.COPY_MIN_ROWS:
                pg_copy.copy_insert(conn, "amem_vectors_in", VECTOR_COLUMNS, group.values(), sql.SQL(
                    "INSERT INTO {s}.memory_vectors ({cols}) SELECT {cols} FROM amem_vectors_in ").format(**fmt)
                    + upsert)
            else:
                with conn.cursor() as cur:
                    cur.executemany(sql.SQL("INSERT INTO {s}.memory_vectors ({cols}) VALUES ({v}) ").format(
                        v=sql.SQL(", ").join(sql.Placeholder() * len(VECTOR_COLUMNS)), **fmt) + upsert,
                        list(group.values()))
    metrics.wrote(metrics.PGVECTOR, len(rows))
    return len(rows)


def search(conn: psycopg.Connection, tenant_id: str, region: str, vector: np.ndarray, *, k: int = 10,
           ef_search: int = 64) -> list[SearchHit]:
    """Top-k cosine neighbours of `vector` among the tenant's vectors in `region`, with their text."""
    # SET LOCAL semantics via set_config(..., true): on Citus a session SET would not reach the workers.
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', "
                 "'relaxed_order', true)", (str(max(ef_search, k)),))
    metrics.read(metrics.PGVECTOR)
    with metrics.timed(metrics.SEARCH_SECONDS, metrics.PGVECTOR):
        rows = _search_rows(conn, tenant_id, region, np.asarray(vector, dtype=np.float32), k)
    return [SearchHit(event_id=r[0], score=float(r[1]), text=r[2]) for r in rows]


def nearest_sql(region: str, dim: int) -> sql.Composable:
    """The k nearest of a tenant (parameters q, tenant, k) as (event_id, created_at, exact distance). ORDER BY is
    the indexed fp16 distance, so HNSW can answer large tenants; the planner scans small ones exactly."""
    return sql.SQL(
        """SELECT event_id, created_at, embedding <=> %(q)s AS distance FROM {s}.memory_vectors
           WHERE tenant_id = %(tenant)s ORDER BY {order} LIMIT %(k)s""").format(
        s=sql.Identifier(region_schema(region)), order=pg_vector_table.indexed_distance(dim, sql.Placeholder("q")))


def _search_rows(conn: psycopg.Connection, tenant_id: str, region: str, vector: np.ndarray, k: int) -> list[tuple]:
    """(event_id, score, text) best first. Nearest vectors first, then their texts by key: joining the events in
    the same statement made Postgres open every daily partition of the events table for each search (no
    plan-time pruning on created_at values from a subquery), p50 3.6 vs 2.4 ms in bench/retrieval.py at 20k."""
    s = sql.Identifier(region_schema(region))
    hits = conn.execute(nearest_sql(region, len(vector)), {"q": vector, "tenant": tenant_id, "k": k}).fetchall()
    if not hits:
        return []
    # created_at = ANY(constants) prunes to the hits' days at plan time.
    texts = dict(conn.execute(sql.SQL(
        """SELECT event_id, text FROM {s}.memory_events
           WHERE tenant_id = %s AND created_at = ANY(%s) AND event_id = ANY(%s)""").format(s=s),
        (tenant_id, [h[1] for h in hits], [h[0] for h in hits])).fetchall())
    return sorted(((str(e), 1 - d, texts[e]) for e, _, d in hits if e in texts), key=lambda r: -r[1])


def tenant_counts(conn: psycopg.Connection, regions: Sequence[str]) -> dict[str, dict[str, int]]:
    """tenant → {'events': n, 'pg_vectors': n} over all regions (maintenance connection)."""
    counts: dict[str, dict[str, int]] = {}
    for region in regions:
        s = sql.Identifier(region_schema(region))
        for table, label in (("memory_events", "events"), ("memory_vectors", "pg_vectors")):
            for tenant, n in conn.execute(sql.SQL("SELECT tenant_id, count(*) FROM {s}.{t} GROUP BY tenant_id")
                                          .format(s=s, t=sql.Identifier(table))):
                entry = counts.setdefault(tenant, {"events": 0, "pg_vectors": 0})
                entry[label] += n
    return counts


def count_tenant(conn: psycopg.Connection, tenant_id: str, region: str) -> tuple[int, int]:
    """(events, vectors) of one tenant in one region."""
    s = sql.Identifier(region_schema(region))
    return conn.execute(sql.SQL(
        "SELECT (SELECT count(*) FROM {s}.memory_events WHERE tenant_id = %(t)s),"
        " (SELECT count(*) FROM {s}.memory_vectors WHERE tenant_id = %(t)s)").format(s=s),
        {"t": tenant_id}).fetchone()
