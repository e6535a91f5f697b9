"""memory_events_sensor: reads new Kafka offsets, dead-letters bad events, registers tenants, requests runs."""

import time

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from amem_dagster.errors import EventRejected, ServiceUnavailable
from amem_dagster.events import is_valid_tenant_id, parse_event, trace_id_from_headers
from amem_dagster.observability import logs, metrics, tracing
from assets.partitions import TENANTS
from resources.dead_letters import dead_letter
from resources.kafka import KafkaResource, deliver_all, read_from
from resources.placement import PlacementResource
from sensors.batching import BatchPolicy, RunPlan, due_tenants, plan_runs
from sensors.cursor import EventsCursor
from sensors.topic_cursor import resume_cursor

# Dagster abandons a tick after 60 s; reading stops well before, and the next tick continues from the cursor.
READ_SECONDS = 20.0
MAX_MESSAGES_PER_TICK = 100_000
SENSOR_NAME = "memory_events_sensor"
# Dead letters logged one line each per tick; the tick's summary line counts them all by reason.
MAX_DEAD_LETTER_LINES = 100
log = logs.get("sensor")


def run_request_for(plan: RunPlan, cluster_id: str, traceparent: str | None = None) -> RunRequest:
    """A run over the plan's tenant range whose memory_events step reads exactly the planned offsets."""
    offsets = [{"tenant_id": t, "partition": p, "first": lo, "last": hi}
               for t, spans in sorted(plan.ranges.items()) for p, (lo, hi) in sorted(spans.items())]
    return RunRequest(
        run_key=plan.run_key("events", cluster_id),
        run_config={"ops": {"memory_events": {"config": {"offsets": offsets}}}},
        tags={ASSET_PARTITION_RANGE_START_TAG: plan.first_tenant, ASSET_PARTITION_RANGE_END_TAG: plan.last_tenant,
              "amem/tenants": str(len(plan.ranges)),
              # The sensor's span: the run's spans continue its trace (see amem_dagster.observability.tracing).
              **({tracing.RUN_TRACEPARENT_TAG: traceparent} if traceparent else {})},
    )


def build_memory_events_sensor(job: JobDefinition, policy: BatchPolicy = BatchPolicy(),
                               minimum_interval_seconds: int = 5) -> SensorDefinition:
    """The sensor over `memory.events` that launches `job` for batches of tenants."""

    @sensor(name=SENSOR_NAME, job=job, minimum_interval_seconds=minimum_interval_seconds,
            default_status=DefaultSensorStatus.RUNNING)
    def memory_events_sensor(context: SensorEvaluationContext, kafka: KafkaResource,
                             placement: PlacementResource) -> SensorResult | SkipReason:
        """Turns new memory events on Kafka into tenant partitions and batched runs; offsets live in the cursor."""
        tick_started = time.time_ns()
        resumed = resume_cursor(context, kafka, kafka.events_topic)
        if isinstance(resumed, SkipReason):
            return resumed
        cursor, start = resumed
        cluster_id = cursor.cluster_id

        regions = placement.region_list()
        consumer = kafka.consumer()
        producer = kafka.producer()
        try:
            records, next_offsets = read_from(consumer, kafka.events_topic, start,
                                              max_messages=MAX_MESSAGES_PER_TICK,
                                              deadline=time.monotonic() + READ_SECONDS)
            read_done = time.time_ns()
            now = time.time()
            rejected: dict[str, int] = {}
            accepted = 0
            # One span for the batch, linked to each event's trace (contexts collected only when tracing is on).
            contexts = [tracing.context_from_headers(r.headers) for r in records] if (
                records and tracing.recording()) else []
            with tracing.batch_span(f"{SENSOR_NAME} parse", contexts, enabled=bool(records),
                                    start_time=tick_started, attributes={
                    "messaging.system": "kafka", "messaging.source.name": kafka.events_topic,
                    "messaging.batch.message_count": len(records)}) as span:
                tracing.record_span("kafka read", tick_started, read_done, {"messages": len(records)})
                for record in records:
                    try:
                        event = parse_event(record.value, key=record.key, timestamp_ms=record.timestamp_ms,
                                            headers=record.headers, regions=regions,
                                            default_region=placement.default_region)
                    except EventRejected as rejection:
                        dead_letter(producer, kafka.dlq_topic, kafka.events_topic, record, rejection)
                        rejected[rejection.code] = rejected.get(rejection.code, 0) + 1
                        if sum(rejected.values()) <= MAX_DEAD_LETTER_LINES:
                            _log_dead_letter(record, rejection)
                        continue
                    cursor.add_event(event.tenant_id, record.partition, record.offset, _produced_at(record, now))
                    accepted += 1
                # Dead letters must be durable before the cursor moves past their offsets.
                deliver_all(producer)
                span.set_attribute("amem.accepted", accepted)
                span.set_attribute("amem.rejected", sum(rejected.values()))
                traceparent = tracing.traceparent(span) if records else None
        except ServiceUnavailable as exc:
            return SkipReason(f"Kafka read failed, cursor kept: {exc}")
        finally:
            consumer.close()
        cursor.offsets = next_offsets

        known = context.instance.get_dynamic_partitions(TENANTS.name)
        known_set = set(known)
        new_tenants = sorted(t for t in cursor.pending if t not in known_set)
        due = due_tenants(cursor.pending, now, policy, next_tick_in=minimum_interval_seconds)
        plans = plan_runs(cursor.pending, due, [*known, *new_tenants], policy)
        for plan in plans:
            for tenant in plan.ranges:
                del cursor.pending[tenant]
        if records:
            context.log.info(f"read {len(records)} messages, dead-lettered {sum(rejected.values())} {rejected}, "
                             f"{len(new_tenants)} new tenants, {len(plans)} runs, "
                             f"{len(cursor.pending)} tenants pending")
            log.info("memory_events_sensor tick", extra=logs.fields(
                sensor=SENSOR_NAME, events=len(records), count=accepted, rejected=sum(rejected.values()),
                by_reason=rejected, new=len(new_tenants), runs=len(plans), pending=len(cursor.pending),
                trace_id=_trace_id(traceparent)))
        _count(accepted, rejected, cursor)
        return SensorResult(
            run_requests=[run_request_for(plan, cluster_id, traceparent) for plan in plans],
            dynamic_partitions_requests=[AddDynamicPartitionsRequest(TENANTS.name, new_tenants)] if new_tenants else [],
            cursor=cursor.to_json(),
        )

    return memory_events_sensor


def _produced_at(record, now: float) -> float:
    """When the event was produced (its Kafka timestamp), so an event's wait counts from there rather than from the
    tick that read it; never later than now, whatever the producer's clock says."""
    if record.timestamp_ms is None or record.timestamp_ms <= 0:
        return now
    return min(now, record.timestamp_ms / 1000.0)


def _log_dead_letter(record, rejection: EventRejected) -> None:
    """One line per dead letter: where it was, why, and whose it is when the key is a valid tenant id."""
    key = record.key.decode("utf-8", errors="replace") if record.key else None
    log.warning("event dead-lettered", extra=logs.fields(
        sensor=SENSOR_NAME, reason=rejection.code, partition=record.partition, offset=record.offset,
        tenant_id=key if is_valid_tenant_id(key) else None, trace_id=trace_id_from_headers(record.headers)))


def _trace_id(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent else None


def _count(accepted: int, rejected: dict[str, int], cursor: EventsCursor) -> None:
    """Update this process's counters and push them when a Pushgateway is configured."""
    metrics.EVENTS_INGESTED.inc(accepted)
    for code, n in rejected.items():
        metrics.dead_lettered(code, n)
    metrics.SENSOR_PENDING_EVENTS.set(sum(p.count for p in cursor.pending.values()))
    metrics.push(SENSOR_NAME)
