"""The write paths behind the assets, free of Dagster: store parsed events; embed events and write every store.

The benchmark's direct baseline calls the same functions, so pipeline and baseline differ only in orchestration.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from amem_dagster.events import MemoryEvent
from amem_dagster.observability import metrics, tracing
from resources import pg_lifecycle, pg_memory
from resources.embedder import EmbedderResource
from resources.kafka import KafkaResource, deliver_all
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow

# Texts encoded and written per round: bounds memory and lets a failed run keep what it finished. Small, so that
# the last chunk's writes (the only ones no encode overlaps) are short; large enough to batch the writes.
CHUNK = 512
# The steps the writer thread runs (and `flush`, after the last chunk); their CPU is that thread's own time.
WRITE_STEPS = ("milvus_write", "pg_write", "publish", "flush")


@dataclass
class EmbedOutcome:
    """How many events each tenant got embedded, and where the time went (wall seconds per step, and the CPU
    seconds of the write steps; encode's CPU is spread over the runtime's own threads)."""

    per_tenant: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))

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


def chunks_by_tenant(todo: Sequence[tuple[str, object]], size: int = CHUNK) -> list[Sequence]:
    """Cut `todo` into chunks of about `size`, at tenant boundaries where it can: each tenant's vectors then
    go to pgvector in one transaction, unless the tenant alone has more than `size` events."""
    chunks, begin, tenant_start = [], 0, 0
    for i in range(1, len(todo) + 1):
        if i < len(todo) and todo[i][0] == todo[i - 1][0]:
            continue
        # todo[tenant_start:i] is one tenant's run of events.
        if i - begin > size and tenant_start > begin:
            chunks.append(todo[begin:tenant_start])
            begin = tenant_start
        while i - begin > size:
            chunks.append(todo[begin:begin + size])
            begin += size
        tenant_start = i
    if begin < len(todo):
        chunks.append(todo[begin:])
    return chunks


def embed_and_write(todo: Sequence[tuple[str, pg_memory.StoredEvent]], *, embedder: EmbedderResource,
                    milvus: MilvusResource, postgres: PostgresResource, kafka: KafkaResource) -> EmbedOutcome:
    """Encode (tenant, event) pairs in chunks; write Milvus, then pgvector, then announce on memory.embeddings.

    A writer thread stores chunk n while chunk n+1 encodes: the writes wait mostly on the servers, so the
    encoder keeps the cores busy meanwhile. At most one chunk is in flight, which bounds memory; chunks are
    small so that the writes of the last one, which nothing overlaps, are short. The one Milvus flush runs
    while the last chunk goes to pgvector.
    """
    outcome = EmbedOutcome()
    if not todo:
        return outcome
    producer = kafka.producer()
    tracer = tracing.tracer()
    in_flight: list[Future] = []
    with ThreadPoolExecutor(1, thread_name_prefix="store-writes") as writer:
        for chunk in chunks_by_tenant(todo):
            t0 = time.perf_counter()
            with tracer.start_as_current_span("embed", attributes={"amem.texts": len(chunk),
                                                                  "amem.model": embedder.model_name}):
                vectors = embedder.encode([e.text for _, e in chunk])
            seconds = time.perf_counter() - t0
            outcome.seconds["encode"] += seconds
            metrics.EMBEDDING_BATCH_SECONDS.observe(seconds)
            metrics.EMBEDDING_BATCH_SIZE.observe(len(chunk))
            for future in in_flight:
                future.result()  # a failed write stops the run before more is encoded
            # The writer runs in this thread's trace context, so its spans stay children of the step's span.
            # One worker runs the two parts in order: Milvus first, then pgvector and the announcements.
            wrote = writer.submit(contextvars.copy_context().run, _write_milvus, chunk, vectors,
                                  embedder.model_name, milvus, outcome)
            in_flight = [wrote, writer.submit(contextvars.copy_context().run, _write_pgvector_and_publish, wrote,
                                              postgres, kafka, producer, outcome)]
        in_flight[0].result()
        t, cpu = time.perf_counter(), time.thread_time()
        milvus.flush({e.region for _, e in todo})
        in_flight[1].result()
    deliver_all(producer)
    outcome.seconds["flush"] += time.perf_counter() - t
    outcome.cpu["flush"] += time.thread_time() - cpu
    return outcome


def _write_milvus(chunk: Sequence[tuple[str, pg_memory.StoredEvent]], vectors, model: str, milvus: MilvusResource,
                  outcome: EmbedOutcome) -> list[VectorRow]:
    """Upsert one encoded chunk into Milvus (no flush); returns its rows for the pgvector part."""
    clock = _StepClock(outcome)
    rows = [VectorRow(tenant_id=t, event_id=e.event_id, region=e.region, created_at=e.created_at,
                      subject_id=e.subject_id, model=model, embedding=v)
            for (t, e), v in zip(chunk, vectors, strict=True)]
    # Milvus first: the pgvector row is what marks an event as embedded, so a crash in between re-embeds
    # (upserts are idempotent) instead of leaving Milvus short.
    with tracing.tracer().start_as_current_span("milvus upsert", attributes={"db.system": "milvus",
                                                                             "amem.rows": len(rows)}):
        milvus.upsert(rows, flush=False)
    clock.lap("milvus_write")
    return rows


def _write_pgvector_and_publish(wrote: Future, postgres: PostgresResource, kafka: KafkaResource, producer,
                                outcome: EmbedOutcome) -> None:
    """pgvector (one transaction per tenant), then the announcements, of a chunk Milvus already holds."""
    rows: list[VectorRow] = wrote.result()
    tracer = tracing.tracer()
    clock = _StepClock(outcome)
    by_tenant: dict[str, list[VectorRow]] = defaultdict(list)
    for row in rows:
        by_tenant[row.tenant_id].append(row)
    with tracer.start_as_current_span("pgvector upsert", attributes={
            "db.system": "postgresql", "amem.rows": len(rows), "amem.tenants": len(by_tenant)}):
        for tenant, group in by_tenant.items():
            with postgres.tenant_transaction(tenant) as conn:
                pg_memory.upsert_vectors(conn, group)
            outcome.per_tenant[tenant] = outcome.per_tenant.get(tenant, 0) + len(group)
    clock.lap("pg_write")
    with tracer.start_as_current_span("publish", attributes={
            "messaging.system": "kafka", "messaging.destination.name": kafka.embeddings_topic,
            "messaging.batch.message_count": len(rows)}) as span:
        # The announcements carry this span's context onward (no header at all when nothing is traced).
        headers = tracing.traceparent_headers(span)
        for row in rows:
            producer.produce(kafka.embeddings_topic, key=row.tenant_id.encode(), value=json.dumps({
                "event_id": row.event_id, "tenant_id": row.tenant_id, "region": row.region, "model": row.model,
                "dim": len(row.embedding), "created_at": row.created_at.isoformat()}).encode(), headers=headers)
        producer.poll(0)
    clock.lap("publish")


class _StepClock:
    """Wall and this thread's CPU seconds between laps, added to the outcome under each lap's step name."""

    def __init__(self, outcome: EmbedOutcome) -> None:
        self.outcome = outcome
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def lap(self, step: str) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        self.outcome.seconds[step] += wall - self.wall
        self.outcome.cpu[step] += cpu - self.cpu
        self.wall, self.cpu = wall, cpu
