"""Kafka resource: idempotent producer, assignment-only consumers, admin and topic provisioning."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from dagster import ConfigurableResource
from pydantic import Field

from amem_dagster.errors import ServiceUnavailable
from amem_dagster.settings import DLQ_TOPIC, EMBEDDINGS_TOPIC, ERASURES_TOPIC, EVENTS_TOPIC


@dataclass(frozen=True)
class KafkaRecord:
    """A consumed message, detached from librdkafka's objects."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int | None


class KafkaResource(ConfigurableResource):
    """Kafka access for the memory topics; consumers read by assignment at explicit offsets, never in a group."""

    bootstrap_servers: str
    client_id: str = "amem-dagster"
    events_topic: str = EVENTS_TOPIC
    embeddings_topic: str = EMBEDDINGS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    erasures_topic: str = ERASURES_TOPIC
    events_partitions: int = 12
    replication_factor: int = 1
    extra_config: dict[str, str] = Field(
        default_factory=dict, description="librdkafka settings for every client, e.g. SASL/TLS in production"
    )

    def _base(self) -> dict[str, object]:
        return {"bootstrap.servers": self.bootstrap_servers, "client.id": self.client_id, **self.extra_config}

    def producer(self, **overrides: object) -> Producer:
        """An idempotent producer: retries never duplicate or reorder within a partition."""
        return Producer({**self._base(), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", **overrides})

    def consumer(self) -> Consumer:
        # A group id is mandatory in librdkafka but unused: offsets live in the Dagster sensor cursor, and
        # joining a group would cost a rebalance on every read.
        return Consumer({**self._base(), "group.id": f"{self.client_id}-reader", "enable.auto.commit": False,
                         "enable.auto.offset.store": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50})

    def admin(self) -> AdminClient:
        return AdminClient(self._base())

    def topic_specs(self) -> dict[str, tuple[int, dict[str, str]]]:
        """Topic name → (partitions, config) for every topic this system owns."""
        return {
            self.events_topic: (self.events_partitions, {}),
            self.embeddings_topic: (self.events_partitions, {}),
            self.dlq_topic: (1, {}),
            # Compacted: the latest erasure record per tenant/subject key stays for late consumers.
            self.erasures_topic: (1, {"cleanup.policy": "compact"}),
        }

    def provision_topics(self, timeout: float = 15.0) -> dict[str, str]:
        """Create missing topics; returns name → 'created' | 'exists'. Never changes an existing topic."""
        admin = self.admin()
        new = [NewTopic(name, num_partitions=parts, replication_factor=self.replication_factor, config=config)
               for name, (parts, config) in self.topic_specs().items()]
        outcome = {}
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ServiceUnavailable(f"could not create topic {name}: {exc.args[0].str()}") from None
                outcome[name] = "exists"
        return outcome

    def describe(self, topic: str, timeout: float = 5.0) -> tuple[str, list[int]]:
        """(cluster id, partition ids) of a topic; raises ServiceUnavailable when the broker does not answer."""
        try:
            metadata = self.admin().list_topics(topic=topic, timeout=timeout)
        except KafkaException as exc:
            raise ServiceUnavailable(f"Kafka at {self.bootstrap_servers} did not answer: {exc.args[0].str()}") from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise ServiceUnavailable(f"topic {topic} does not exist on {self.bootstrap_servers}")
        return metadata.cluster_id or "", sorted(found.partitions)


def read_from(
    consumer: Consumer,
    topic: str,
    start: Mapping[int, int],
    *,
    max_messages: int,
    deadline: float,
    max_bytes: int = 256 * 1024 * 1024,
) -> tuple[list[KafkaRecord], dict[int, int]]:
    """Read each partition from its start offset until it first reaches its end, `max_messages`, `max_bytes` or
    `deadline`.

    A partition that has reached its end once counts as read even if more arrives meanwhile: under steady
    production, "until every partition is at its end at the same moment" kept a sensor tick reading for seconds.
    Returns the records and, per partition, the next offset to read. Stopping early is safe: the offsets say
    exactly where the next read continues.
    """
    nxt = dict(start)
    records: list[KafkaRecord] = []
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    at_end: set[int] = set()
    size = 0
    try:
        while (len(at_end) < len(start) and len(records) < max_messages and size < max_bytes
               and time.monotonic() < deadline):
            for msg in consumer.consume(min(1000, max_messages - len(records)), 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        continue
                    raise ServiceUnavailable(f"reading {topic}: {err.str()}")
                records.append(_record(msg))
                size += len(msg.value() or b"") + len(msg.key() or b"")
                nxt[msg.partition()] = msg.offset() + 1
    finally:
        consumer.unassign()
    return records, nxt


def read_ranges(
    consumer: Consumer, topic: str, ranges: Mapping[int, tuple[int, int]], *, timeout: float = 60.0
) -> Iterator[KafkaRecord]:
    """Yield every record with first <= offset <= last for each partition's inclusive (first, last) range."""
    remaining = {p: (first, last) for p, (first, last) in ranges.items() if last >= first}
    if not remaining:
        return
    consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in remaining.items()])
    deadline = time.monotonic() + timeout
    try:
        while remaining:
            if time.monotonic() > deadline:
                missing = ", ".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(remaining.items()))
                raise ServiceUnavailable(f"timed out reading {topic} ranges {missing}")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and msg.partition() in remaining:
                        lo, hi = remaining[msg.partition()]
                        raise ServiceUnavailable(
                            f"{topic} partition {msg.partition()} ends at {msg.offset()} before offset {hi}; "
                            "the broker lost messages (was it restarted?)"
                        )
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise ServiceUnavailable(f"reading {topic}: {err.str()}")
                    continue
                span = remaining.get(msg.partition())
                if span is None or msg.offset() < span[0]:
                    continue
                if msg.offset() <= span[1]:
                    yield _record(msg)
                if msg.offset() >= span[1]:
                    del remaining[msg.partition()]
                    consumer.incremental_unassign([TopicPartition(topic, msg.partition())])
    finally:
        consumer.unassign()


def end_offsets(consumer: Consumer, topic: str, partitions: Mapping[int, int], *, deadline: float,
                max_messages: int = 50_000, timeout: float = 5.0) -> tuple[dict[int, int], bool]:
    """Each partition's end offset (the next offset to be written), and whether every figure is exact.

    Asks the broker for high watermarks, then reads forward from max(watermark, `partitions[p]`) to the end:
    on Kafka that reads nothing, but the embedded Tansu broker reports the base offset of the last batch + 1,
    so up to one batch is read to find the real end. When the probe runs out of messages or time, the figures
    are lower bounds (exact=False). `partitions` maps partition → an offset known to exist (e.g. a cursor).
    """
    ends: dict[int, int] = {}
    for partition, known in partitions.items():
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        except KafkaException as exc:
            raise ServiceUnavailable(f"watermarks of {topic}/{partition}: {exc.args[0].str()}") from None
        ends[partition] = max(high, known)
    if not ends:
        return ends, True
    consumer.assign([TopicPartition(topic, p, o) for p, o in ends.items()])
    at_end: set[int] = set()
    seen = 0
    try:
        while len(at_end) < len(ends) and seen < max_messages and time.monotonic() < deadline:
            for msg in consumer.consume(min(1000, max_messages - seen), 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        ends[msg.partition()] = max(ends[msg.partition()], msg.offset())
                        continue
                    raise ServiceUnavailable(f"reading {topic}: {err.str()}")
                seen += 1
                at_end.discard(msg.partition())
                ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)
    finally:
        consumer.unassign()
    return ends, len(at_end) == len(ends)


def _record(msg) -> KafkaRecord:
    ts_type, ts = msg.timestamp()
    return KafkaRecord(
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=ts if ts_type else None,
    )


def deliver_all(producer: Producer, timeout: float = 30.0) -> None:
    """Flush and fail loudly if anything stayed undelivered: callers advance offsets only after this."""
    left = producer.flush(timeout)
    if left:
        raise ServiceUnavailable(f"{left} Kafka message(s) were not delivered within {timeout:.0f}s")
