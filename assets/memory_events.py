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
from assets.memory_writes import store_events
from assets.partitions import TENANTS
from assets.tables import tenant_table
from resources.kafka import KafkaResource, read_ranges
from resources.placement import PlacementResource
from resources.postgres import PostgresResource


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
    finally:
        consumer.close()
    read_seconds = time.perf_counter() - started

    stored = store_events(postgres, by_tenant)
    per_tenant = {t: {"received": len(by_tenant.get(t, ())), **stored.get(t, {"new": 0, "erased": 0})}
                  for t in sorted(tenants)}
    total_new = sum(v["new"] for v in per_tenant.values())
    received = sum(v["received"] for v in per_tenant.values())
    context.log.info(f"{len(tenants)} tenants: {received} events received, {total_new} new, "
                     f"{skipped} invalid skipped, {read} Kafka records scanned")
    return MaterializeResult(metadata={
        "tenants": len(tenants),
        "events_received": received,
        "events_new": total_new,
        "invalid_skipped": skipped,
        "expired_on_arrival": expired,
        "kafka_records_scanned": read,
        "kafka_read_seconds": MetadataValue.float(round(read_seconds, 3)),
        "duration_seconds": MetadataValue.float(round(time.perf_counter() - started, 3)),
        "erased_subject_refused": sum(v["erased"] for v in per_tenant.values()),
        "per_tenant": tenant_table(per_tenant, ("received", "new", "erased")),
    })
