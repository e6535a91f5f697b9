"""Benchmark helpers over the stores: total counts, and emptying them between measurements."""

import psycopg
from pymilvus import MilvusClient
from psycopg import sql

from resources.pg_schema import region_schema


def stored_counts(env: dict) -> dict[str, int]:
    """Rows in the events and pgvector tables and entities in the Milvus collections, over all tenants."""
    counts = {"events": 0, "pg_vectors": 0, "milvus_vectors": 0}
    client = _milvus(env)
    with psycopg.connect(env["AMEM_PG_DSN"]) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'amem\\_%'")]
        for schema in schemas:
            for table, key in (("memory_events", "events"), ("memory_vectors", "pg_vectors")):
                counts[key] += conn.execute(sql.SQL("SELECT count(*) FROM {s}.{t}").format(
                    s=sql.Identifier(schema), t=sql.Identifier(table))).fetchone()[0]
    for name in client.list_collections():
        counts["milvus_vectors"] += int(client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])
    client.close()
    return counts


def reset_stores(env: dict, regions) -> None:
    """Empty the tenant tables and drop the Milvus collections (they are re-created on first use)."""
    with psycopg.connect(env["AMEM_PG_DSN"]) as conn:
        for region in regions:
            conn.execute(sql.SQL("TRUNCATE {s}.memory_events, {s}.memory_vectors").format(
                s=sql.Identifier(region_schema(region))))
    client = _milvus(env)
    for name in client.list_collections():
        client.drop_collection(name)
    client.close()


def _milvus(env: dict) -> MilvusClient:
    # A channel of its own: pymilvus shares one per URI by default, and a shared channel left idle while a run
    # works was answered "too many pings" (GOAWAY) by the Lite server and failed to recover.
    return MilvusClient(env["AMEM_MILVUS_URI"], dedicated=True)
