"""Milvus collection layouts: a partition per tenant on Milvus Lite, a tenant_id partition key on a Milvus server."""

# Why two layouts: Milvus Lite 3.2 hashes a partition key into 16 fixed buckets and never prunes a search by the
# tenant_id filter, and its search loops in Python over every row in scope (primary-key dedup, tombstones)
# before the HNSW call: ~0.6 µs per row, so a tenant's search over a whole 200k-row collection takes ~150 ms.
# A partition per tenant, named in every read, leaves only that tenant's rows in scope. A Milvus server prunes
# partition-key buckets from the `tenant_id == ...` filter itself and caps partitions per collection (1024 by
# default), so it keeps the key.

from __future__ import annotations

from collections import defaultdict
from typing import Any

PARTITION_KEY = "partition_key"
TENANT_PARTITIONS = "tenant_partitions"
# Regions are lower case, so no region's collection name can end like this.
RELAYOUT_SUFFIX = "_Relayout"
MAX_EVENT_ID = 128
# VARCHAR max_length counts UTF-8 bytes; a subject id is up to 256 characters of up to 4 bytes each.
MAX_SUBJECT_BYTES = 1024
FIELDS = ["pk", "tenant_id", "event_id", "region", "created_at", "subject_id", "model", "embedding"]


def tenant_partition(tenant_id: str) -> str:
    """The partition holding a tenant's rows. Injective: '_' becomes '_u' and '-' becomes '_h'."""
    return "t_" + tenant_id.replace("_", "_u").replace("-", "_h")


def layout_of(description: dict) -> str:
    key = any(f.get("is_partition_key") for f in description["fields"] if f["name"] == "tenant_id")
    return PARTITION_KEY if key else TENANT_PARTITIONS


def create(client: Any, name: str, *, dim: int, layout: str, m: int, ef_construction: int) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64 + 1 + MAX_EVENT_ID)
    schema.add_field("tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=layout == PARTITION_KEY)
    schema.add_field("event_id", DataType.VARCHAR, max_length=MAX_EVENT_ID)
    schema.add_field("region", DataType.VARCHAR, max_length=16)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("subject_id", DataType.VARCHAR, max_length=MAX_SUBJECT_BYTES)
    schema.add_field("model", DataType.VARCHAR, max_length=256)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="HNSW", metric_type="COSINE",
                    params={"M": m, "efConstruction": ef_construction})
    client.create_collection(name, schema=schema, index_params=index)


def ensure_partitions(client: Any, name: str, partitions: set[str], known: set[str]) -> None:
    """Create the missing partitions; `known` caches what exists (partitions are never dropped here)."""
    from pymilvus.exceptions import MilvusException

    for partition in sorted(partitions - known):
        try:
            client.create_partition(name, partition)
        except MilvusException:
            if not client.has_partition(name, partition):  # otherwise another process created it first
                raise
        known.add(partition)


def relayout(client: Any, name: str, *, dim: int, m: int, ef_construction: int, batch: int = 1000) -> int:
    """Copy a partition-key collection into a tenant-partition one under the same name; return the rows copied.

    Run it with no other writer. An interrupted run is safe to repeat: the copy goes to `<name>_Relayout`, and
    the original is dropped only once every row is in the copy (then `recover` finishes the rename).
    """
    copy = name + RELAYOUT_SUFFIX
    if client.has_collection(copy):
        client.drop_collection(copy)  # a partial copy from an interrupted run; the original is intact
    create(client, copy, dim=dim, layout=TENANT_PARTITIONS, m=m, ef_construction=ef_construction)
    client.load_collection(name)
    known: set[str] = set()
    copied = 0
    iterator = client.query_iterator(name, batch_size=batch, output_fields=FIELDS, consistency_level="Strong")
    try:
        while rows := iterator.next():
            by_partition: dict[str, list[dict]] = defaultdict(list)
            for row in rows:
                by_partition[tenant_partition(row["tenant_id"])].append({f: row[f] for f in FIELDS})
            ensure_partitions(client, copy, set(by_partition), known)
            for partition, entities in by_partition.items():
                client.insert(copy, entities, partition_name=partition)
            copied += len(rows)
    finally:
        iterator.close()
    client.flush(copy)
    client.drop_collection(name)
    recover(client, name)
    return copied


def recover(client: Any, name: str) -> bool:
    """Finish a relayout that stopped between dropping the original and renaming the complete copy."""
    copy = name + RELAYOUT_SUFFIX
    if client.has_collection(name) or not client.has_collection(copy):
        return False
    client.rename_collection(copy, name)
    return True
