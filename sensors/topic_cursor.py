"""Resuming a sensor's Kafka cursor: on the cluster the broker reports now, from the offsets the cursor holds."""

from dagster import SensorEvaluationContext, SkipReason

from amem_dagster.errors import ServiceUnavailable
from resources.kafka import KafkaResource
from sensors.cursor import EventsCursor


def resume_cursor(context: SensorEvaluationContext, kafka: KafkaResource,
                  topic: str) -> tuple[EventsCursor, dict[int, int]] | SkipReason:
    """The tick's cursor and start offset per partition, or a SkipReason when the broker does not answer."""
    cursor = EventsCursor.from_json(context.cursor)
    try:
        cluster_id, partitions = kafka.describe(topic)
    except ServiceUnavailable as exc:
        return SkipReason(f"Kafka unavailable, nothing read: {exc}")
    if cursor.offsets and cursor.cluster_id and cursor.cluster_id != cluster_id:
        # Another cluster (e.g. the in-memory embedded broker restarted): its offsets mean other messages.
        context.log.warning(f"Kafka cluster changed {cursor.cluster_id} -> {cluster_id}: offsets restart at 0 "
                            f"and {len(cursor.pending)} tenants' pending ranges are dropped")
        cursor = EventsCursor()
    cursor.cluster_id = cluster_id
    return cursor, {p: cursor.offsets.get(p, 0) for p in partitions}
