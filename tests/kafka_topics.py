"""Private Kafka topics per test module, so one test's events and announcements never reach another's sensors."""

from __future__ import annotations

import uuid

from resources.kafka import KafkaResource


def private_kafka(service_env: dict[str, str], prefix: str, *, events_partitions: int = 1) -> KafkaResource:
    """A KafkaResource on the session broker whose four topics are `<prefix>.<random>.*`, created before return."""
    name = f"{prefix}.{uuid.uuid4().hex[:8]}"
    kafka = KafkaResource(bootstrap_servers=service_env["AMEM_KAFKA_BOOTSTRAP"], events_partitions=events_partitions,
                          events_topic=f"{name}.events", embeddings_topic=f"{name}.embeddings",
                          dlq_topic=f"{name}.dlq", erasures_topic=f"{name}.erasures")
    kafka.provision_topics()
    return kafka
