"""memory_events: each run's tenants' events, read from their exact Kafka offsets and stored in Postgres."""

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from amem_dagster.errors import EventRejected
from amem_dagster.events import MemoryEvent, parse_event
from amem_dagster.k8s_tags import CPU_STEP_TAGS
from amem_dagster.observability import logs, metrics, tracing
from assets.memory_writes import store_events
from assets.partitions import TENANTS
from assets.tables import tenant_table
from resources.kafka import KafkaResource, read_ranges
from resources.placement import PlacementResource
from resources.postgres import PostgresResource

# Trace ids named in a run's tags; the count of traced events is always there.
MAX_TRACE_TAGS = 5
TRACE_IDS_TAG = "amem/trace_ids"
TRACE_TAG_PREFIX = "amem/trace/"
TRACED_EVENTS_TAG = "amem/traced_events"
log = logs.get("assets")


class TenantOffsets(Config):
    """Where one tenant's events sit in one Kafka partition (inclusive offsets)."""

    tenant_id: str
    partition: int
    first: int
    last: int


class MemoryEventsConfig(Config):
    """The offsets this run must read; the memory_events_sensor fills it. Empty: nothing new to read."""

    offsets: list[TenantOffsets] = []


@asset(
    partitions_def=TENANTS,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="memory",
    op_tags=CPU_STEP_TAGS,
    kinds={"kafka", "postgres"},
)
def memory_events(
    context: AssetExecutionContext,
    config: MemoryEventsConfig,
    kafka: KafkaResource,
    postgres: PostgresResource,
    placement: PlacementResource,
) -> MaterializeResult:
    """Valid memory events per tenant, stored idempotently by event_id in the tenant's region schema."""
    started = time.perf_counter()
    started_ns = time.time_ns()
    tenants = set(context.partition_keys)
    wanted: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    for item in config.offsets:
        if item.tenant_id in tenants:
            wanted[item.tenant_id][item.partition] = (item.first, item.last)
    # One pass per Kafka partition over the union of this run's ranges; each record is kept only by its tenant.
    union: dict[int, tuple[int, int]] = {}
    for spans in wanted.values():
        for partition, (lo, hi) in spans.items():
            cur = union.get(partition)
            union[partition] = (min(lo, cur[0]), max(hi, cur[1])) if cur else (lo, hi)

    regions = placement.region_list()
    # Events already past their region's retention window are not stored: they would only wait for a purge.
    oldest_kept = {r: datetime.now(UTC) - timedelta(days=placement.retention_days(r)) for r in regions}
    expired = 0
    by_tenant: dict[str, list[tuple[MemoryEvent, int, int]]] = defaultdict(list)
    contexts = []
    read = skipped = 0
    consumer = kafka.consumer()
    try:
        for record in read_ranges(consumer, kafka.events_topic, union):
            read += 1
            tenant = record.key.decode("utf-8", errors="replace") if record.key else None
            span = wanted.get(tenant, {}).get(record.partition) if tenant else None
            if span is None or not span[0] <= record.offset <= span[1]:
                continue
            try:
                event = parse_event(record.value, key=record.key, timestamp_ms=record.timestamp_ms,
                                    headers=record.headers, regions=regions, default_region=placement.default_region)
            except EventRejected:
                skipped += 1  # dead-lettered by the sensor when it read this offset
                continue
            if event.created_at < oldest_kept[event.region]:
                expired += 1
                continue
            by_tenant[event.tenant_id].append((event, record.partition, record.offset))
            if event.trace_id and tracing.recording():
                contexts.append(tracing.context_from_headers(record.headers))
    finally:
        consumer.close()
    read_seconds = time.perf_counter() - started

    upstream = tracing.parse_traceparent(context.run.tags.get(tracing.RUN_TRACEPARENT_TAG))
    with tracing.batch_span("memory_events", contexts, upstream=upstream, start_time=started_ns, attributes={
            "dagster.run_id": context.run_id, "dagster.job": context.job_name, "amem.tenants": len(tenants),
            "amem.kafka_records_scanned": read}) as span:
        tracing.record_span("kafka read", started_ns, started_ns + int(read_seconds * 1e9), {"messages": read})
        stored = store_events(postgres, by_tenant)
        step_traceparent = tracing.traceparent(span)
    traced = _tag_run_with_traces(context, by_tenant, step_traceparent)
    _log_stored(context.run_id, by_tenant, stored)
    per_tenant = {t: {"received": len(by_tenant.get(t, ())), **stored.get(t, {"new": 0, "erased": 0})}
                  for t in sorted(tenants)}
    total_new = sum(v["new"] for v in per_tenant.values())
    received = sum(v["received"] for v in per_tenant.values())
    context.log.info(f"{len(tenants)} tenants: {received} events received, {total_new} new, "
                     f"{skipped} invalid skipped, {read} Kafka records scanned")
    result = MaterializeResult(metadata={
        "tenants": len(tenants),
        "events_received": received,
        "events_new": total_new,
        "invalid_skipped": skipped,
        "expired_on_arrival": expired,
        "kafka_records_scanned": read,
        "kafka_read_seconds": MetadataValue.float(round(read_seconds, 3)),
        "duration_seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
        "erased_subject_refused": sum(v["erased"] for v in per_tenant.values()),
        "traced_events": traced,
        "busiest_tenants": tenant_table(per_tenant, ("received", "new", "erased")),
    })
    finish_step(context.job_name)
    return result


def _tag_run_with_traces(context: AssetExecutionContext, by_tenant, step_traceparent: str | None) -> int:
    """Put the events' trace ids (a few, each also as its own tag key for exact lookup) and their count in the
    run's tags, and this step's span for the steps after it; returns the number of traced events."""
    trace_ids = [e.trace_id for rows in by_tenant.values() for e, _, _ in rows if e.trace_id]
    tags = {}
    if trace_ids:
        named = sorted(set(trace_ids))[:MAX_TRACE_TAGS]
        tags = {TRACED_EVENTS_TAG: str(len(trace_ids)), TRACE_IDS_TAG: ",".join(named),
                **{f"{TRACE_TAG_PREFIX}{t}": "1" for t in named}}
    if step_traceparent:
        tags[tracing.EVENTS_TRACEPARENT_TAG] = step_traceparent
    if tags:
        context.instance.add_run_tags(context.run_id, tags)
    return len(trace_ids)


def _log_stored(run_id: str, by_tenant, stored: dict[str, dict[str, int]]) -> None:
    """One JSON line per tenant, agent and event type: how many events were received, with their trace id if one."""
    for tenant, rows in sorted(by_tenant.items()):
        groups: dict[tuple[str, str], list[MemoryEvent]] = defaultdict(list)
        for event, _, _ in rows:
            groups[(event.agent_name, event.event_type)].append(event)
        for (agent, event_type), events in sorted(groups.items()):
            traces = {e.trace_id for e in events if e.trace_id}
            log.info("events received", extra=logs.fields(
                run_id=run_id, tenant_id=tenant, agent_name=agent, event_type=event_type, count=len(events),
                region=events[0].region if len({e.region for e in events}) == 1 else None,
                trace_id=next(iter(traces)) if len(traces) == 1 else None,
                traced_events=sum(1 for e in events if e.trace_id)))
        log.info("events stored", extra=logs.fields(run_id=run_id, tenant_id=tenant, **stored.get(tenant, {})))


def finish_step(job_name: str) -> None:
    """End of a step: push this process's metrics (if a Pushgateway is set) and export buffered spans."""
    metrics.push(job_name)
    tracing.flush()
