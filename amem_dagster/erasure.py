"""Right to erasure: remove one data subject's memories from every store, ledger it, announce it, audit it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from amem_dagster.errors import AmemError, EventRejected
from amem_dagster.events import MAX_SUBJECT_ID, require_tenant_id
from resources import pg_lifecycle
from resources.kafka import KafkaResource, deliver_all
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource


class ErasureIncomplete(AmemError):
    """A store still holds a subject's memories after an erasure."""


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure removed per store; the subject itself is not kept here beyond the caller's input."""

    tenant_id: str
    erased_at: datetime
    removed: dict[str, int]


def require_subject_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_SUBJECT_ID:
        raise EventRejected("bad_subject_id", f"subject_id must be 1 to {MAX_SUBJECT_ID} characters")
    return value


def erase_subject(postgres: PostgresResource, milvus: MilvusResource, kafka: KafkaResource, tenant_id: str,
                  subject_id: str, regions: tuple[str, ...], *, actor: str = "amem",
                  now: datetime | None = None) -> ErasureReport:
    """Ledger first (so ingestion stops re-inserting), then delete everywhere, verify, announce and audit."""
    tenant_id = require_tenant_id(tenant_id)
    subject_id = require_subject_id(subject_id)
    erased_at = now or datetime.now(UTC)
    with postgres.tenant_transaction(tenant_id) as conn:
        pg_lifecycle.record_erasure(conn, tenant_id, subject_id, erased_at)
        removed = pg_lifecycle.erase_subject_rows(conn, tenant_id, subject_id, regions)
    removed["milvus_vectors"] = sum(milvus.delete(tenant_id, r, subject_id=subject_id) for r in regions)

    with postgres.tenant_transaction(tenant_id) as conn:
        left = pg_lifecycle.count_subject_rows(conn, tenant_id, subject_id, regions)
    left += sum(milvus.count(tenant_id, r, subject_id=subject_id) for r in regions)
    if left:
        raise ErasureIncomplete(f"{left} rows or vectors of the subject remain in tenant {tenant_id}")

    producer = kafka.producer()
    # Keyed by tenant and subject on a compacted topic: downstream consumers erase too; the latest record stays.
    producer.produce(kafka.erasures_topic, key=f"{tenant_id}/{subject_id}".encode(), value=json.dumps({
        "tenant_id": tenant_id, "subject_id": subject_id, "erased_at": erased_at.isoformat(),
        "removed": removed}).encode())
    deliver_all(producer)
    with postgres.tenant_transaction(tenant_id) as conn:
        pg_lifecycle.audit(conn, actor=actor, action="erasure", tenant_id=tenant_id, subject_id=subject_id,
                           details={"erased_at": erased_at.isoformat(), "removed": removed})
    return ErasureReport(tenant_id=tenant_id, erased_at=erased_at, removed=removed)
