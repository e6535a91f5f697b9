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
from amem_dagster.events import parse_event
from assets.partitions import TENANTS
from resources.dead_letters import dead_letter
from resources.kafka import KafkaResource, deliver_all, read_from
from resources.placement import PlacementResource
from sensors.batching import BatchPolicy, RunPlan, due_tenants, plan_runs
from sensors.cursor import EventsCursor

# Dagster abandons a tick after 60 s; reading stops well before, and the next tick continues from the cursor.
READ_SECONDS = 20.0
MAX_MESSAGES_PER_TICK = 100_000


def run_request_for(plan: RunPlan, cluster_id: str) -> RunRequest:
    """A run over the plan's tenant range whose memory_events step reads exactly the planned offsets."""
    offsets = [{"tenant_id": t, "partition": p, "first": lo, "last": hi}
               for t, spans in sorted(plan.ranges.items()) for p, (lo, hi) in sorted(spans.items())]
    return RunRequest(
        run_key=plan.run_key("events", cluster_id),
        run_config={"ops": {"memory_events": {"config": {"offsets": offsets}}}},
        tags={ASSET_PARTITION_RANGE_START_TAG: plan.first_tenant, ASSET_PARTITION_RANGE_END_TAG: plan.last_tenant,
              "amem/tenants": str(len(plan.ranges))},
    )


def build_memory_events_sensor(job: JobDefinition, policy: BatchPolicy = BatchPolicy(),
                               minimum_interval_seconds: int = 5) -> SensorDefinition:
    """The sensor over `memory.events` that launches `job` for batches of tenants."""

    @sensor(name="memory_events_sensor", job=job, minimum_interval_seconds=minimum_interval_seconds,
            default_status=DefaultSensorStatus.RUNNING)
    def memory_events_sensor(context: SensorEvaluationContext, kafka: KafkaResource,
                             placement: PlacementResource) -> SensorResult | SkipReason:
        """Turns new memory events on Kafka into tenant partitions and batched runs; offsets live in the cursor."""
        cursor = EventsCursor.from_json(context.cursor)
        try:
            cluster_id, partitions = kafka.describe(kafka.events_topic)
        except ServiceUnavailable as exc:
            return SkipReason(f"Kafka unavailable, nothing read: {exc}")
        if cursor.offsets and cursor.cluster_id and cursor.cluster_id != cluster_id:
            # Another cluster (e.g. the in-memory embedded broker restarted): its offsets mean other messages.
            context.log.warning(f"Kafka cluster changed {cursor.cluster_id} -> {cluster_id}: offsets restart at 0 "
                                f"and {len(cursor.pending)} tenants' pending ranges are dropped")
            cursor = EventsCursor()
        cursor.cluster_id = cluster_id
        start = {p: cursor.offsets.get(p, 0) for p in partitions}

        regions = placement.region_list()
        consumer = kafka.consumer()
        producer = kafka.producer()
        try:
            records, next_offsets = read_from(consumer, kafka.events_topic, start,
                                              max_messages=MAX_MESSAGES_PER_TICK,
                                              deadline=time.monotonic() + READ_SECONDS)
            now = time.time()
            rejected: dict[str, int] = {}
            for record in records:
                try:
                    event = parse_event(record.value, key=record.key, timestamp_ms=record.timestamp_ms,
                                        headers=record.headers, regions=regions,
                                        default_region=placement.default_region)
                except EventRejected as rejection:
                    dead_letter(producer, kafka.dlq_topic, kafka.events_topic, record, rejection)
                    rejected[rejection.code] = rejected.get(rejection.code, 0) + 1
                    continue
                cursor.add_event(event.tenant_id, record.partition, record.offset, now)
            # Dead letters must be durable before the cursor moves past their offsets.
            deliver_all(producer)
        except ServiceUnavailable as exc:
            return SkipReason(f"Kafka read failed, cursor kept: {exc}")
        finally:
            consumer.close()
        cursor.offsets = next_offsets

        known = context.instance.get_dynamic_partitions(TENANTS.name)
        known_set = set(known)
        new_tenants = sorted(t for t in cursor.pending if t not in known_set)
        plans = plan_runs(cursor.pending, due_tenants(cursor.pending, now, policy), [*known, *new_tenants], policy)
        for plan in plans:
            for tenant in plan.ranges:
                del cursor.pending[tenant]
        if records:
            context.log.info(f"read {len(records)} messages, dead-lettered {sum(rejected.values())} {rejected}, "
                             f"{len(new_tenants)} new tenants, {len(plans)} runs, {len(cursor.pending)} tenants pending")
        return SensorResult(
            run_requests=[run_request_for(plan, cluster_id) for plan in plans],
            dynamic_partitions_requests=[AddDynamicPartitionsRequest(TENANTS.name, new_tenants)] if new_tenants else [],
            cursor=cursor.to_json(),
        )

    return memory_events_sensor
