"""Memory rows in Postgres: idempotent event inserts, the embedding backlog, pgvector upserts, search, counts.

Every function takes a connection from `PostgresResource.tenant_transaction` (or the maintenance one for the
cross-tenant counts) and names the tenant in its WHERE clauses too, so queries stay router queries on Citus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from amem_dagster.events import MemoryEvent
from amem_dagster.observability import metrics
from resources.pg_schema import region_schema
from resources.records import SearchHit, VectorRow

# Only a re-sent event (same event_id, new Kafka message, no created_at) can differ in created_at; it is
# re-sent within moments, so the duplicate check looks one day either side and stays partition-pruned.
RESEND_WINDOW = "1 day"


@dataclass(frozen=True)
class StoredEvent:
    """An event read back for embedding."""

    event_id: str
    created_at: datetime
    region: str
    subject_id: str | None
    text: str


def insert_events(conn: psycopg.Connection, events: Sequence[tuple[MemoryEvent, int, int]]) -> int:
    """Insert (event, kafka partition, offset) rows not stored yet; returns how many were new."""
    inserted = 0
    by_region: dict[str, list[dict]] = {}
    for event, partition, offset in events:
        by_region.setdefault(event.region, []).append({
            "tenant_id": event.tenant_id, "event_id": event.event_id, "created_at": event.created_at,
            "region": event.region, "agent_name": event.agent_name, "event_type": event.event_type,
            "text": event.text, "subject_id": event.subject_id, "metadata": Jsonb(event.metadata),
            "trace_id": event.trace_id, "source_partition": partition, "source_offset": offset,
        })
    for region, rows in by_region.items():
        statement = sql.SQL(
            """INSERT INTO {s}.memory_events (tenant_id, event_id, created_at, region, agent_name, event_type,
                   text, subject_id, metadata, trace_id, source_partition, source_offset)
               SELECT %(tenant_id)s, %(event_id)s, %(created_at)s, %(region)s, %(agent_name)s, %(event_type)s,
                   %(text)s, %(subject_id)s, %(metadata)s, %(trace_id)s, %(source_partition)s, %(source_offset)s
               WHERE NOT EXISTS (
                   SELECT 1 FROM {s}.memory_events
                   WHERE tenant_id = %(tenant_id)s AND event_id = %(event_id)s::uuid
                     AND created_at BETWEEN %(created_at)s::timestamptz - {w}::interval
                                        AND %(created_at)s::timestamptz + {w}::interval)
               ON CONFLICT DO NOTHING""").format(s=sql.Identifier(region_schema(region)),
                                                 w=sql.Literal(RESEND_WINDOW))
        with metrics.timed(metrics.STORE_WRITE_SECONDS, metrics.POSTGRES), conn.cursor() as cur:
            cur.executemany(statement, rows)
            inserted += max(cur.rowcount, 0)
    metrics.wrote(metrics.POSTGRES, inserted)
    return inserted


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
    by_region: dict[str, list[VectorRow]] = {}
    for row in rows:
        by_region.setdefault(row.region, []).append(row)
    for region, group in by_region.items():
        statement = sql.SQL(
            """INSERT INTO {s}.memory_vectors (tenant_id, event_id, created_at, region, subject_id, model, embedding)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (tenant_id, event_id, created_at) DO UPDATE
               SET model = EXCLUDED.model, embedding = EXCLUDED.embedding, subject_id = EXCLUDED.subject_id,
                   embedded_at = now()""").format(s=sql.Identifier(region_schema(region)))
        with metrics.timed(metrics.STORE_WRITE_SECONDS, metrics.PGVECTOR), conn.cursor() as cur:
            cur.executemany(statement, [
                (r.tenant_id, r.event_id, r.created_at, r.region, r.subject_id, r.model,
                 np.asarray(r.embedding, dtype=np.float32)) for r in group])
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
        rows = _search_rows(conn, tenant_id, region, vector, k)
    return [SearchHit(event_id=r[0], score=float(r[1]), text=r[2]) for r in rows]


def _search_rows(conn: psycopg.Connection, tenant_id: str, region: str, vector: np.ndarray, k: int) -> list[tuple]:
    return conn.execute(sql.SQL(
        """SELECT v.event_id::text, 1 - v.distance AS score, e.text
           FROM (SELECT event_id, created_at, embedding <=> %(q)s AS distance
                 FROM {s}.memory_vectors WHERE tenant_id = %(tenant)s
                 ORDER BY embedding <=> %(q)s LIMIT %(k)s) v
           JOIN {s}.memory_events e
             ON e.tenant_id = %(tenant)s AND e.event_id = v.event_id AND e.created_at = v.created_at
           ORDER BY v.distance""").format(s=sql.Identifier(region_schema(region))),
        {"q": np.asarray(vector, dtype=np.float32), "tenant": tenant_id, "k": k}).fetchall()


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
