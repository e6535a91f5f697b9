"""Retrieval benchmark loading: the project's pgvector layout, the previous daily-partition layout, Milvus Lite,
and the app's batch write paths timed against the previous executemany statements."""

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from amem_dagster.events import MemoryEvent
from bench.retrieval_data import Dataset
from resources import pg_memory, pg_schema, pg_vector_table
from resources.milvus import MilvusResource, _connection
from resources.postgres import PostgresResource
from resources.records import VectorRow

REGION = "eu"
MODEL = "bench/clustered-random-384"
PREVIOUS = "bench_previous"


def _bulk_session(conn: psycopg.Connection) -> None:
    register_vector(conn)
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute(f"SET max_parallel_maintenance_workers = {max((os.cpu_count() or 1) - 1, 0)}")


def load_postgres(postgres: PostgresResource, data: Dataset) -> dict:
    """COPY (binary) into the project's tables with the HNSW index dropped, then re-create it with the schema's
    own definition (pg_vector_table.ensure_vectors): one bulk build instead of 200k incremental inserts."""
    timings = {}
    postgres.pool()  # migrates: schemas, tables, partitions, indexes
    postgres.ensure_partitions(REGION, {c.date() for c in data.created_at})
    schema = pg_schema.region_schema(REGION)
    s = sql.Identifier(schema)
    t = time.perf_counter()
    with psycopg.connect(postgres.dsn) as conn:
        _bulk_session(conn)
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {s}.memory_vectors_hnsw").format(s=s))
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {s}.memory_events (tenant_id, event_id, created_at, region, agent_name, "
                                  "event_type, text) FROM STDIN").format(s=s)) as copy:
                for i, event_id in enumerate(data.event_ids):
                    copy.write_row((data.tenant_of(i), event_id, data.created_at[i], REGION, "bench", "Observation",
                                    f"memory {i} of {data.tenant_of(i)}"))
            with cur.copy(sql.SQL("COPY {s}.memory_vectors (tenant_id, event_id, created_at, region, model, "
                                  "embedding) FROM STDIN WITH (FORMAT BINARY)").format(s=s)) as copy:
                copy.set_types(["text", "uuid", "timestamptz", "text", "text", "vector"])
                for i, event_id in enumerate(data.event_ids):
                    copy.write_row((data.tenant_of(i), uuid.UUID(event_id), data.created_at[i], REGION, MODEL,
                                    data.vectors[i]))
        conn.commit()
        timings["copy_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        pg_vector_table.ensure_vectors(conn, schema, REGION, data.dim, m=postgres.hnsw_m,
                                       ef=postgres.hnsw_ef_construction, policy=pg_schema.tenant_policy())
        conn.execute(sql.SQL("ANALYZE {s}.memory_vectors").format(s=s))
        conn.execute(sql.SQL("ANALYZE {s}.memory_events").format(s=s))
        conn.commit()
        timings["index_seconds"] = time.perf_counter() - t
        count = "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n " \
                "ON n.oid = p.relnamespace WHERE n.nspname = %s AND p.relname = %s"
        timings["vector_partitions"] = conn.execute(count, (schema, "memory_vectors")).fetchone()[0]
        timings["event_partitions"] = conn.execute(count, (schema, "memory_events")).fetchone()[0]
    return timings


def _previous_insert_events(conn: psycopg.Connection, rows: list[tuple]) -> None:
    """Schema 3's insert_events statement: one pipelined INSERT ... WHERE NOT EXISTS per row (executemany)."""
    conn.cursor().executemany(sql.SQL(
        """INSERT INTO {s}.memory_events (tenant_id, event_id, created_at, region, agent_name, event_type, text)
           SELECT %s, %s::uuid, %s::timestamptz, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM {s}.memory_events
             WHERE tenant_id = %s AND event_id = %s::uuid AND created_at BETWEEN %s::timestamptz - interval '1 day'
               AND %s::timestamptz + interval '1 day') ON CONFLICT DO NOTHING""").format(
        s=sql.Identifier(pg_schema.region_schema(REGION))),
        [(*r, r[0], r[1], r[2], r[2]) for r in rows])


def _previous_upsert_vectors(conn: psycopg.Connection, rows: list[VectorRow]) -> None:
    """Schema 3's upsert_vectors statement: executemany of one INSERT ... ON CONFLICT DO UPDATE per row."""
    conn.cursor().executemany(sql.SQL(
        """INSERT INTO {s}.memory_vectors (tenant_id, event_id, created_at, region, subject_id, model, embedding)
           VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, event_id, created_at) DO UPDATE
           SET model = EXCLUDED.model, embedding = EXCLUDED.embedding, subject_id = EXCLUDED.subject_id,
               embedded_at = now()""").format(s=sql.Identifier(pg_schema.region_schema(REGION))),
        [(r.tenant_id, r.event_id, r.created_at, r.region, r.subject_id, r.model, r.embedding) for r in rows])


def measure_writes(postgres: PostgresResource, data: Dataset, rows: int = 1000, rounds: int = 3) -> dict:
    """Rows/s of the app's insert_events and upsert_vectors (HNSW maintained) vs schema 3's executemany
    statements on the same batches, new rows then the same rows again (a replay), alternating, best of rounds."""
    tenant = data.tenants[0]
    now = datetime.now(UTC)
    postgres.ensure_partitions(REGION, {now.date(), (now - timedelta(hours=1)).date()})
    best: dict[str, float] = {}
    ways = {"events": (lambda c, b: pg_memory.insert_events(c, b), lambda c, b: _previous_insert_events(c, [
                (e.tenant_id, e.event_id, e.created_at, e.region, e.agent_name, e.event_type, e.text)
                for e, _, _ in b])),
            "vectors": (pg_memory.upsert_vectors, _previous_upsert_vectors)}
    for _ in range(rounds):
        for label, (new, old) in ways.items():
            for way, write in (("new", new), ("previous", old)):
                ids = [str(uuid.uuid4()) for _ in range(rows)]
                stamps = [now - timedelta(seconds=i) for i in range(rows)]
                if label == "events":
                    batch = [(MemoryEvent(i, tenant, "bench", "Observation", f"bench write {i}", REGION, at), 0, n)
                             for n, (i, at) in enumerate(zip(ids, stamps, strict=True))]
                else:
                    batch = [VectorRow(tenant, i, REGION, at, None, MODEL, v)
                             for i, at, v in zip(ids, stamps, data.draw(tenant, rows), strict=True)]
                for phase in ("insert", "replay"):
                    t = time.perf_counter()
                    with postgres.tenant_transaction(tenant) as conn:
                        write(conn, batch)
                    key = f"{label}_{phase}_{way}_rows_per_s"
                    best[key] = max(best.get(key, 0.0), rows / (time.perf_counter() - t))
                with postgres.owner_transaction() as conn:  # leave the measured data set as it was
                    conn.execute(sql.SQL("DELETE FROM {s}.{t} WHERE tenant_id = %s AND event_id = ANY(%s)").format(
                        s=sql.Identifier(pg_schema.region_schema(REGION)), t=sql.Identifier(f"memory_{label}")),
                        (tenant, [uuid.UUID(i) for i in ids]))
    out = {k: round(v, 1) for k, v in sorted(best.items())}
    for label in ways:
        for phase in ("insert", "replay"):
            out[f"{label}_{phase}_speedup"] = round(
                best[f"{label}_{phase}_new_rows_per_s"] / best[f"{label}_{phase}_previous_rows_per_s"], 2)
    return out


def load_previous_layout(postgres: PostgresResource, data: Dataset) -> dict:
    """Schema 3's vectors table for comparison: RANGE-partitioned by day on created_at, one HNSW (vector_cosine_ops)
    per daily partition, searched with schema 3's query (join to the events table for the text)."""
    started = time.perf_counter()
    with psycopg.connect(postgres.dsn) as conn:
        _bulk_session(conn)
        conn.execute(f"CREATE SCHEMA {PREVIOUS}")
        conn.execute(f"CREATE TABLE {PREVIOUS}.memory_vectors (tenant_id text NOT NULL, event_id uuid NOT NULL, "
                     f"created_at timestamptz NOT NULL, embedding vector({data.dim}) NOT NULL, "
                     "PRIMARY KEY (tenant_id, event_id, created_at)) PARTITION BY RANGE (created_at)")
        for day in sorted({c.date() for c in data.created_at}):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            conn.execute(sql.SQL("CREATE TABLE {p} PARTITION OF {s}.memory_vectors FOR VALUES FROM ({lo}) TO ({hi})")
                         .format(p=sql.Identifier(PREVIOUS, f"memory_vectors_p{day:%Y%m%d}"),
                                 s=sql.Identifier(PREVIOUS), lo=sql.Literal(start),
                                 hi=sql.Literal(start + timedelta(days=1))))
        with conn.cursor() as cur, cur.copy(f"COPY {PREVIOUS}.memory_vectors (tenant_id, event_id, created_at, "
                                            "embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "uuid", "timestamptz", "vector"])
            for i, event_id in enumerate(data.event_ids):
                copy.write_row((data.tenant_of(i), uuid.UUID(event_id), data.created_at[i], data.vectors[i]))
        conn.commit()
        conn.execute(f"CREATE INDEX memory_vectors_hnsw ON {PREVIOUS}.memory_vectors USING hnsw "
                     f"(embedding vector_cosine_ops) WITH (m = {postgres.hnsw_m}, "
                     f"ef_construction = {postgres.hnsw_ef_construction})")
        conn.execute(f"ANALYZE {PREVIOUS}.memory_vectors")
        conn.commit()
    return {"seconds": round(time.perf_counter() - started, 1)}


def previous_search(postgres: PostgresResource) -> callable:
    """Schema 3's search as the owner (the scratch table has no row-level security): SET LOCAL ef_search and
    iterative scan, nearest 10 over every daily partition, joined to the events for the text."""
    conn = psycopg.connect(postgres.dsn)
    register_vector(conn)
    statement = sql.SQL(
        """SELECT v.event_id::text, 1 - v.distance, e.text
           FROM (SELECT event_id, created_at, embedding <=> %(q)s AS distance FROM {p}.memory_vectors
                 WHERE tenant_id = %(t)s ORDER BY embedding <=> %(q)s LIMIT 10) v
           JOIN {s}.memory_events e ON e.tenant_id = %(t)s AND e.event_id = v.event_id AND e.created_at = v.created_at
           ORDER BY v.distance""").format(p=sql.Identifier(PREVIOUS), s=sql.Identifier(pg_schema.region_schema(REGION)))

    def search(tenant: str, vector: np.ndarray, ef: int) -> list:
        with conn.transaction():
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', "
                         "'relaxed_order', true)", (str(max(ef, 10)),))
            rows = conn.execute(statement, {"t": tenant, "q": np.asarray(vector, dtype=np.float32)}).fetchall()
        return [SimpleNamespace(event_id=r[0]) for r in rows]

    return search


def load_milvus(milvus: MilvusResource, data: Dataset, chunk: int = 5000) -> dict:
    t = time.perf_counter()
    milvus.ensure_collection(REGION)
    for start in range(0, len(data.event_ids), chunk):
        rows = [VectorRow(tenant_id=data.tenant_of(i), event_id=data.event_ids[i], region=REGION,
                          created_at=data.created_at[i], subject_id=None, model=MODEL, embedding=data.vectors[i])
                for i in range(start, min(start + chunk, len(data.event_ids)))]
        milvus.upsert(rows, flush=False)
    milvus.flush([REGION])
    timings = {"upsert_seconds": time.perf_counter() - t}
    t = time.perf_counter()
    client, _ = _connection(milvus.uri, milvus.token)
    name = milvus.collection_name(REGION)
    info = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        info = client.describe_index(name, "embedding") or {}
        if int(info.get("pending_index_rows", 0) or 0) == 0 and \
                int(info.get("indexed_rows", 0) or 0) >= int(info.get("total_rows", 0) or 0):
            break
        time.sleep(1)
    timings["index_wait_seconds"] = time.perf_counter() - t
    timings["index"] = {k: info.get(k) for k in ("index_type", "metric_type", "M", "efConstruction", "indexed_rows",
                                                 "total_rows", "state") if k in info}
    return timings
