"""The write paths behind the assets, free of Dagster: store parsed events; embed events and write every store.

The benchmark's direct baseline calls the same functions, so pipeline and baseline differ only in orchestration.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from amem_dagster.events import MemoryEvent
from amem_dagster.observability import metrics, tracing
from resources import pg_lifecycle, pg_memory
from resources.embedder import EmbedderResource
from resources.kafka import KafkaResource, deliver_all
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow

# Texts encoded and written per round: bounds memory and lets a failed run keep what it finished.
CHUNK = 2048


@dataclass
class EmbedOutcome:
    """How many events each tenant got embedded, and where the time went."""

    per_tenant: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def total(self) -> int:
        return sum(self.per_tenant.values())


def store_events(postgres: PostgresResource,
                 by_tenant: Mapping[str, Sequence[tuple[MemoryEvent, int, int]]]) -> dict[str, dict[str, int]]:
    """Insert each tenant's (event, partition, offset) rows in its own scoped transaction.

    Events about a subject erased after they were created are refused, so a replay cannot resurrect them.
    Returns tenant → {"new": rows inserted, "erased": rows refused}.
    """
    days_by_region: dict[str, set] = defaultdict(set)
    for rows in by_tenant.values():
        for event, _, _ in rows:
            days_by_region[event.region].add(event.created_at.date())
    for region, days in days_by_region.items():
        postgres.ensure_partitions(region, days)
    outcome = {}
    with tracing.tracer().start_as_current_span("store events", attributes={
            "db.system": "postgresql", "amem.tenants": len(by_tenant),
            "amem.events": sum(len(rows) for rows in by_tenant.values())}) as span:
        for tenant, rows in by_tenant.items():
            with postgres.tenant_transaction(tenant) as conn:
                pg_lifecycle.register_tenant(conn, tenant)
                kept, erased = pg_lifecycle.without_erased(conn, tenant, rows)
                outcome[tenant] = {"new": pg_memory.insert_events(conn, kept), "erased": erased}
        span.set_attribute("amem.events_new", sum(v["new"] for v in outcome.values()))
    return outcome


def embed_and_write(todo: Sequence[tuple[str, pg_memory.StoredEvent]], *, embedder: EmbedderResource,
                    milvus: MilvusResource, postgres: PostgresResource, kafka: KafkaResource) -> EmbedOutcome:
    """Encode (tenant, event) pairs in chunks; write Milvus, then pgvector, then announce on memory.embeddings."""
    outcome = EmbedOutcome()
    if not todo:
        return outcome
    model = embedder.model_name
    producer = kafka.producer()
    tracer = tracing.tracer()
    for begin in range(0, len(todo), CHUNK):
        chunk = todo[begin:begin + CHUNK]
        t0 = time.perf_counter()
        with tracer.start_as_current_span("embed", attributes={"amem.texts": len(chunk), "amem.model": model}):
            vectors = embedder.encode([e.text for _, e in chunk])
        t1 = time.perf_counter()
        metrics.EMBEDDING_BATCH_SECONDS.observe(t1 - t0)
        metrics.EMBEDDING_BATCH_SIZE.observe(len(chunk))
        rows = [VectorRow(tenant_id=t, event_id=e.event_id, region=e.region, created_at=e.created_at,
                          subject_id=e.subject_id, model=model, embedding=v)
                for (t, e), v in zip(chunk, vectors, strict=True)]
        # Milvus first: the pgvector row is what marks an event as embedded, so a crash in between re-embeds
        # (upserts are idempotent) instead of leaving Milvus short.
        with tracer.start_as_current_span("milvus upsert", attributes={"db.system": "milvus", "amem.rows": len(rows)}):
            milvus.upsert(rows, flush=False)
        t2 = time.perf_counter()
        by_tenant: dict[str, list[VectorRow]] = defaultdict(list)
        for row in rows:
            by_tenant[row.tenant_id].append(row)
        with tracer.start_as_current_span("pgvector upsert", attributes={
                "db.system": "postgresql", "amem.rows": len(rows), "amem.tenants": len(by_tenant)}):
            for tenant, group in by_tenant.items():
                with postgres.tenant_transaction(tenant) as conn:
                    pg_memory.upsert_vectors(conn, group)
                outcome.per_tenant[tenant] = outcome.per_tenant.get(tenant, 0) + len(group)
        t3 = time.perf_counter()
        with tracer.start_as_current_span("publish", attributes={
                "messaging.system": "kafka", "messaging.destination.name": kafka.embeddings_topic,
                "messaging.batch.message_count": len(rows)}) as span:
            # The announcements carry this span's context onward (no header at all when nothing is traced).
            headers = tracing.traceparent_headers(span)
            for row in rows:
                producer.produce(kafka.embeddings_topic, key=row.tenant_id.encode(), value=json.dumps({
                    "event_id": row.event_id, "tenant_id": row.tenant_id, "region": row.region, "model": model,
                    "dim": int(vectors.shape[1]), "created_at": row.created_at.isoformat()}).encode(),
                    headers=headers)
            producer.poll(0)
        outcome.seconds["encode"] += t1 - t0
        outcome.seconds["milvus_write"] += t2 - t1
        outcome.seconds["pg_write"] += t3 - t2
        outcome.seconds["publish"] += time.perf_counter() - t3
    t4 = time.perf_counter()
    milvus.flush({e.region for _, e in todo})
    deliver_all(producer)
    outcome.seconds["flush"] += time.perf_counter() - t4
    return outcome
