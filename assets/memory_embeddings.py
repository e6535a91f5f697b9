"""memory_embeddings: the run's tenants' not-yet-embedded events, encoded and written to Milvus and pgvector."""

import time

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from amem_dagster.k8s_tags import GPU_STEP_TAGS
from amem_dagster.observability import logs, tracing
from assets.memory_events import finish_step, memory_events
from assets.memory_writes import embed_and_write
from assets.partitions import TENANTS
from assets.tables import tenant_table
from resources import pg_memory
from resources.embedder import EmbedderResource
from resources.kafka import KafkaResource
from resources.milvus import MilvusResource
from resources.placement import PlacementResource
from resources.postgres import PostgresResource

log = logs.get("assets")


@asset(
    partitions_def=TENANTS,
    deps=[memory_events],
    backfill_policy=BackfillPolicy.single_run(),
    group_name="memory",
    op_tags=GPU_STEP_TAGS,
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
    model = embedder.model_name
    # A child of the memory_events step's span in this run: the tags are read fresh, that step added its own.
    tags = context.instance.get_run_by_id(context.run_id).tags if tracing.recording() else {}
    upstream = tracing.parse_traceparent(tags.get(tracing.EVENTS_TRACEPARENT_TAG)
                                         or tags.get(tracing.RUN_TRACEPARENT_TAG))
    with tracing.batch_span("memory_embeddings", upstream=upstream, attributes={
            "dagster.run_id": context.run_id, "dagster.job": context.job_name, "amem.tenants": len(tenants),
            "amem.model": model}) as span:
        todo: list[tuple[str, pg_memory.StoredEvent]] = []
        for tenant in tenants:
            with postgres.tenant_transaction(tenant) as conn:
                for region in placement.region_list():
                    todo.extend((tenant, e) for e in pg_memory.pending_embeddings(conn, tenant, region, model))
        span.set_attribute("amem.events", len(todo))
        outcome = embed_and_write(todo, embedder=embedder, milvus=milvus, postgres=postgres, kafka=kafka)
    total = time.perf_counter() - started
    context.log.info(f"embedded {outcome.total} events of {len(tenants)} tenants with {model} in {total:.2f}s")
    for tenant, count in sorted(outcome.per_tenant.items()):
        log.info("events embedded", extra=logs.fields(run_id=context.run_id, tenant_id=tenant, count=count,
                                                      model=model))
    result = MaterializeResult(metadata={
        "tenants": len(tenants),
        "events_embedded": outcome.total,
        "model": model,
        "dimension": embedder.dimension,
        "duration_seconds": MetadataValue.float(round(total, 3)),
        "events_per_second": MetadataValue.float(round(outcome.total / total, 1) if total else 0.0),
        **{f"{name}_seconds": MetadataValue.float(round(value, 3)) for name, value in outcome.seconds.items()},
        "busiest_tenants": tenant_table({t: {"embedded": outcome.per_tenant.get(t, 0)} for t in tenants},
                                        ("embedded",)),
    })
    finish_step(context.job_name)
    return result
