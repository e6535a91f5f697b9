"""The per-region vectors table: hash partitions by tenant, a halfvec HNSW index, and the move off daily ranges.

Why not daily partitions like the events: a tenant search then walks one HNSW graph per day of retention (about
97 with 90 days), each with a tenant filter, so p99 grew with the window (bench/retrieval.py measured 17–45 ms
over 15 days). Hashing by tenant_id puts all of a tenant's vectors in one partition, so a search is pruned at plan
time to one graph of about 1/16 of the region. Vectors hold no text, so retention can afford a row DELETE on
them (index-assisted by created_at); the events, which hold the personal text, keep their droppable daily
partitions. On Citus the table is also distributed by tenant_id: each shard is hash-partitioned the same way,
which still splits a worker's graph per group of tenants.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

# Partitions per region. A modulus can only change by rebuilding the table, so it is a constant, not a setting.
VECTOR_PARTITIONS = 16
VECTORS = "memory_vectors"
_PREVIOUS = "memory_vectors_range_v3"


def vector_partition_name(remainder: int) -> str:
    return f"{VECTORS}_h{remainder:02d}"


def indexed_distance(dim: int, query: sql.Composable) -> sql.Composable:
    """Cosine distance exactly as the HNSW index is built (fp16 copy of the stored fp32 vector): a search must
    ORDER BY this very expression, or the planner cannot use the index."""
    return sql.SQL("embedding::halfvec({d}) <=> {q}::halfvec({d})").format(d=sql.Literal(dim), q=query)


def partitioned_by(conn: psycopg.Connection, schema: str, table: str) -> str | None:
    """'h' (hash), 'r' (range) or 'l' (list) for a partitioned table, None if it does not exist."""
    row = conn.execute(
        "SELECT pt.partstrat FROM pg_partitioned_table pt WHERE pt.partrelid = to_regclass(%s)",
        (f'"{schema}"."{table}"',)).fetchone()
    return row[0] if row else None


def ensure_vectors(conn: psycopg.Connection, schema: str, region: str, dim: int, *, m: int, ef: int,
                   policy: sql.Composable) -> None:
    """Create the table, its partitions and indexes if missing; move rows over from the schema-3 range layout."""
    fmt = {"s": sql.Identifier(schema), "t": sql.Identifier(VECTORS), "region": sql.Literal(region),
           "dim": sql.Literal(dim), "old": sql.Identifier(_PREVIOUS)}
    previous = partitioned_by(conn, schema, VECTORS) == "r"
    if previous:
        # Rename the old table and free its index and constraint names; its rows are copied below.
        conn.execute(sql.SQL("ALTER TABLE {s}.{t} RENAME TO {old}").format(**fmt))
        conn.execute(sql.SQL("ALTER TABLE {s}.{old} RENAME CONSTRAINT memory_vectors_pkey TO {pk}").format(
            pk=sql.Identifier(f"{_PREVIOUS}_pkey"), **fmt))
        for index in ("memory_vectors_hnsw", "memory_vectors_subject"):
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {s}.{i}").format(i=sql.Identifier(index), **fmt))
    conn.execute(sql.SQL(
        """CREATE TABLE IF NOT EXISTS {s}.{t} (
             tenant_id text NOT NULL,
             event_id uuid NOT NULL,
             created_at timestamptz NOT NULL,
             region text NOT NULL CHECK (region = {region}),
             subject_id text,
             model text NOT NULL,
             embedding vector({dim}) NOT NULL,
             embedded_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (tenant_id, event_id, created_at)
           ) PARTITION BY HASH (tenant_id)""").format(**fmt))
    for remainder in range(VECTOR_PARTITIONS):
        part = sql.Identifier(vector_partition_name(remainder))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {s}.{p} PARTITION OF {s}.{t} FOR VALUES WITH (MODULUS {n}, REMAINDER {r})")
            .format(p=part, n=sql.Literal(VECTOR_PARTITIONS), r=sql.Literal(remainder), **fmt))
        # Nobody is granted the partitions, and a forced policy on each keeps it so should a grant ever slip in;
        # queries through the parent are checked by the parent's policy.
        conn.execute(sql.SQL("ALTER TABLE {s}.{p} ENABLE ROW LEVEL SECURITY").format(p=part, **fmt))
        conn.execute(sql.SQL("ALTER TABLE {s}.{p} FORCE ROW LEVEL SECURITY").format(p=part, **fmt))
        conn.execute(sql.SQL("DROP POLICY IF EXISTS tenant_isolation ON {s}.{p}").format(p=part, **fmt))
        conn.execute(sql.SQL("CREATE POLICY tenant_isolation ON {s}.{p} ").format(p=part, **fmt) + policy)
    if previous:
        # Before the HNSW index exists: one bulk build below is much cheaper than maintaining it row by row.
        conn.execute(sql.SQL(
            "INSERT INTO {s}.{t} (tenant_id, event_id, created_at, region, subject_id, model, embedding, embedded_at)"
            " SELECT tenant_id, event_id, created_at, region, subject_id, model, embedding, embedded_at"
            " FROM {s}.{old} ON CONFLICT DO NOTHING").format(**fmt))
        conn.execute(sql.SQL("DROP TABLE {s}.{old}").format(**fmt))
    conn.execute(sql.SQL(
        "CREATE INDEX IF NOT EXISTS memory_vectors_hnsw ON {s}.{t}"
        " USING hnsw ((embedding::halfvec({dim})) halfvec_cosine_ops) WITH (m = {m}, ef_construction = {ef})")
        .format(m=sql.Literal(m), ef=sql.Literal(ef), **fmt))
    # Retention deletes by age across tenants; erasure deletes one tenant's subject.
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS memory_vectors_created ON {s}.{t} (created_at)").format(**fmt))
    conn.execute(sql.SQL(
        "CREATE INDEX IF NOT EXISTS memory_vectors_subject ON {s}.{t} (tenant_id, subject_id)"
        " WHERE subject_id IS NOT NULL").format(**fmt))
