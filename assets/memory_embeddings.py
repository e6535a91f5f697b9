"""memory_embeddings: the run's tenants' not-yet-embedded events, encoded and written to Milvus and pgvector."""

import json
import time
from collections import defaultdict

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from assets.memory_events import memory_events
from assets.partitions import TENANTS
from assets.tables import tenant_table
from resources import pg_memory
from resources.embedder import EmbedderResource
from resources.kafka import KafkaResource, deliver_all
from resources.milvus import MilvusResource
from resources.placement import PlacementResource
from resources.postgres import PostgresResource
from resources.records import VectorRow

# Texts encoded and written per round: bounds memory and lets a failed run keep what it finished.
CHUNK = 2048


@asset(
    partitions_def=TENANTS,
    deps=[memory_events],
    backfill_policy=BackfillPolicy.single_run(),
    group_name="memory",
    kinds={"pytorch", "postgres", "milvus"},
)
def memory_embeddings(
    context: AssetExecutionContext,
    postgres: PostgresResource,
    milvus: MilvusResource,
    embedder: EmbedderResource,
    kafka: KafkaResource,
    placement: PlacementResource,
) -> MaterializeResult:
    """One vector per event and model, in the pgvector table and the Milvus collection of the event's region."""
    started = time.perf_counter()
    tenants = sorted(context.partition_keys)
    regions = placement.region_list()
    model = embedder.model_name
    todo: list[tuple[str, pg_memory.StoredEvent]] = []
    for tenant in tenants:
        with postgres.tenant_transaction(tenant) as conn:
            for region in regions:
                todo.extend((tenant, e) for e in pg_memory.pending_embeddings(conn, tenant, region, model))
    timings = defaultdict(float)
    per_tenant: dict[str, dict[str, int]] = {t: {"embedded": 0} for t in tenants}
    producer = kafka.producer() if todo else None
    for begin in range(0, len(todo), CHUNK):
        chunk = todo[begin:begin + CHUNK]
        t0 = time.perf_counter()
        vectors = embedder.encode([e.text for _, e in chunk])
        t1 = time.perf_counter()
        rows = [VectorRow(tenant_id=t, event_id=e.event_id, region=e.region, created_at=e.created_at,
                          subject_id=e.subject_id, model=model, embedding=v)
                for (t, e), v in zip(chunk, vectors, strict=True)]
        # Milvus first: the pgvector row is what marks an event as embedded, so a crash in between re-embeds
        # (upserts are idempotent) instead of leaving Milvus short.
        milvus.upsert(rows, flush=False)
        t2 = time.perf_counter()
        by_tenant: dict[str, list[VectorRow]] = defaultdict(list)
        for row in rows:
            by_tenant[row.tenant_id].append(row)
        for tenant, group in by_tenant.items():
            with postgres.tenant_transaction(tenant) as conn:
                pg_memory.upsert_vectors(conn, group)
            per_tenant[tenant]["embedded"] += len(group)
        t3 = time.perf_counter()
        for row in rows:
            producer.produce(kafka.embeddings_topic, key=row.tenant_id.encode(), value=json.dumps({
                "event_id": row.event_id, "tenant_id": row.tenant_id, "region": row.region, "model": model,
                "dim": int(vectors.shape[1]), "created_at": row.created_at.isoformat()}).encode())
        producer.poll(0)
        timings["encode"] += t1 - t0
        timings["milvus_write"] += t2 - t1
        timings["pg_write"] += t3 - t2
        timings["publish"] += time.perf_counter() - t3
    t4 = time.perf_counter()
    if todo:
        milvus.flush({e.region for _, e in todo})
        deliver_all(producer)
    timings["flush"] = time.perf_counter() - t4
    total = time.perf_counter() - started
    context.log.info(f"embedded {len(todo)} events of {len(tenants)} tenants with {model} in {total:.2f}s")
    return MaterializeResult(metadata={
        "tenants": len(tenants),
        "events_embedded": len(todo),
        "model": model,
        "dimension": embedder.dimension,
        "duration_seconds": MetadataValue.float(round(total, 3)),
        "events_per_second": MetadataValue.float(round(len(todo) / total, 1) if total else 0.0),
        **{f"{name}_seconds": MetadataValue.float(round(value, 3)) for name, value in timings.items()},
        "per_tenant": tenant_table(per_tenant, ("embedded",)),
    })
