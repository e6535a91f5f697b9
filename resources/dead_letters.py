"""Dead-lettering: a rejected message goes to the DLQ with its original key, value and headers plus the reason."""

from __future__ import annotations

from confluent_kafka import Producer

from amem_dagster.errors import EventRejected
from resources.kafka import KafkaRecord

ERROR_HEADER = "amem-error"
DETAIL_HEADER = "amem-error-detail"
SOURCE_HEADER = "amem-source"


def dead_letter(producer: Producer, dlq_topic: str, source_topic: str, record: KafkaRecord,
                rejection: EventRejected) -> None:
    """Queue `record` for the DLQ; the caller flushes before it moves its offsets past the record."""
    headers = [
        *record.headers,
        (ERROR_HEADER, rejection.code.encode()),
        (DETAIL_HEADER, rejection.detail.encode("utf-8", errors="replace")[:1024]),
        # Where it came from: a re-delivered dead letter can be recognised by this header.
        (SOURCE_HEADER, f"{source_topic}/{record.partition}/{record.offset}".encode()),
    ]
    producer.produce(dlq_topic, key=record.key, value=record.value, headers=headers,
                     timestamp=record.timestamp_ms or 0)


def header(record: KafkaRecord, name: str) -> str | None:
    """The last value of header `name`, decoded, or None."""
    found = None
    for key, value in record.headers:
        if key == name and value is not None:
            found = value.decode("utf-8", errors="replace")
    return found
