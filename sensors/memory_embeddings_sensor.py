"""memory_embeddings_sensor: new messages on `memory.embeddings` trigger memory_stats for those tenants."""

import json
import time

from dagster import (
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

from amem_dagster.errors import ServiceUnavailable
from amem_dagster.events import is_valid_tenant_id
from amem_dagster.observability import logs, tracing
from assets.partitions import TENANTS
from resources.kafka import KafkaResource, read_from
from sensors.batching import BatchPolicy, due_tenants, plan_runs
from sensors.topic_cursor import resume_cursor

READ_SECONDS = 20.0
MAX_MESSAGES_PER_TICK = 200_000
# Statistics are cheap to refresh, but each run costs seconds: gather a few seconds of embeddings first.
STATS_POLICY = BatchPolicy(min_events=1_000, max_wait_seconds=5.0, max_tenants_per_run=1_000)
SENSOR_NAME = "memory_embeddings_sensor"
log = logs.get("sensor")


def build_memory_embeddings_sensor(job: JobDefinition, policy: BatchPolicy = STATS_POLICY,
                                   minimum_interval_seconds: int = 10) -> SensorDefinition:
    """The sensor over `memory.embeddings` that launches `job` (the downstream assets) per batch of tenants."""

    @sensor(name=SENSOR_NAME, job=job, minimum_interval_seconds=minimum_interval_seconds,
            default_status=DefaultSensorStatus.RUNNING)
    def memory_embeddings_sensor(context: SensorEvaluationContext, kafka: KafkaResource) -> SensorResult | SkipReason:
        """Refreshes downstream per-tenant assets once new embeddings of a tenant are announced."""
        tick_started = time.time_ns()
        resumed = resume_cursor(context, kafka, kafka.embeddings_topic)
        if isinstance(resumed, SkipReason):
            return resumed
        cursor, start = resumed
        cluster_id = cursor.cluster_id
        consumer = kafka.consumer()
        try:
            records, next_offsets = read_from(consumer, kafka.embeddings_topic, start,
                                              max_messages=MAX_MESSAGES_PER_TICK,
                                              deadline=time.monotonic() + READ_SECONDS)
        except ServiceUnavailable as exc:
            return SkipReason(f"Kafka read failed, cursor kept: {exc}")
        finally:
            consumer.close()
        now = time.time()
        known = context.instance.get_dynamic_partitions(TENANTS.name)
        known_set = set(known)
        # The announcements carry the embedding step's traceparent: link this batch to each distinct one.
        contexts = [tracing.context_from_headers(r.headers) for r in records] if (
            records and tracing.recording()) else []
        with tracing.batch_span(f"{SENSOR_NAME} tick", contexts, enabled=bool(records), start_time=tick_started,
                                attributes={"messaging.system": "kafka",
                                            "messaging.source.name": kafka.embeddings_topic,
                                            "messaging.batch.message_count": len(records)}):
            for record in records:
                tenant = _tenant_of(record.value)
                # Only tenants Dagster knows can be partitions; anything else is not ours to refresh.
                if tenant in known_set:
                    cursor.add_event(tenant, record.partition, record.offset, now)
            cursor.offsets = next_offsets
            plans = plan_runs(cursor.pending, due_tenants(cursor.pending, now, policy), known, policy)
            for plan in plans:
                for tenant in plan.ranges:
                    del cursor.pending[tenant]
        if records:
            log.info("memory_embeddings_sensor tick", extra=logs.fields(
                sensor=SENSOR_NAME, events=len(records), runs=len(plans), pending=len(cursor.pending)))
        return SensorResult(
            run_requests=[RunRequest(run_key=plan.run_key("stats", cluster_id), tags={
                ASSET_PARTITION_RANGE_START_TAG: plan.first_tenant,
                ASSET_PARTITION_RANGE_END_TAG: plan.last_tenant, "amem/tenants": str(len(plan.ranges))})
                for plan in plans],
            cursor=cursor.to_json(),
        )

    return memory_embeddings_sensor


def _tenant_of(value: bytes | None) -> str | None:
    try:
        tenant = json.loads(value or b"").get("tenant_id")
    except (ValueError, AttributeError, RecursionError):
        return None  # not ours to judge: a malformed announcement must never stall the cursor
    return tenant if is_valid_tenant_id(tenant) else None
