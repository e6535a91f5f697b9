"""Retention purges and subject erasure against real Postgres, Milvus and Kafka."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from amem_dagster.erasure import erase_subject
from amem_dagster.events import MemoryEvent
from amem_dagster.retention import purge_region
from assets.memory_writes import store_events
from resources import pg_lifecycle, pg_memory, pg_vector_table
from resources.kafka import KafkaResource, read_from
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow

NOW = datetime.now(UTC)
WINDOWS = {"eu": 90, "us": 365}


@pytest.fixture(scope="module")
def stores(service_env):
    return (PostgresResource(dsn=service_env["AMEM_PG_DSN"]), MilvusResource(uri=service_env["AMEM_MILVUS_URI"]),
            KafkaResource(bootstrap_servers=service_env["AMEM_KAFKA_BOOTSTRAP"]))


def _event(tenant, region, created_at, subject=None, text="memory"):
    return MemoryEvent(event_id=str(uuid.uuid4()), tenant_id=tenant, agent_name="a", event_type="Observation",
                       text=text, region=region, created_at=created_at, subject_id=subject)


def _load(stores, events):
    postgres, milvus, _ = stores
    store_events(postgres, {events[0].tenant_id: [(e, 0, i) for i, e in enumerate(events)]})
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(len(events), 384)).astype(np.float32)
    rows = [VectorRow(e.tenant_id, e.event_id, e.region, e.created_at, e.subject_id, "m", v)
            for e, v in zip(events, vectors, strict=True)]
    milvus.upsert(rows)
    with postgres.tenant_transaction(events[0].tenant_id) as conn:
        pg_memory.upsert_vectors(conn, rows)


def _counts(stores, tenant, region, before=None):
    postgres, milvus, _ = stores
    with postgres.tenant_transaction(tenant) as conn:
        where = "tenant_id = %s" + (" AND created_at < %s" if before else "")
        args = (tenant, before) if before else (tenant,)
        events = conn.execute(f"SELECT count(*) FROM amem_{region}.memory_events WHERE {where}", args).fetchone()[0]
        vectors = conn.execute(f"SELECT count(*) FROM amem_{region}.memory_vectors WHERE {where}", args).fetchone()[0]
    return events, vectors, milvus.count(tenant, region, created_before=before)


def test_purge_keeps_exactly_each_regions_window(stores):
    postgres, milvus, _ = stores
    tenant = f"ret-{uuid.uuid4().hex[:8]}"
    # One event a day for 400 days in each region, stamped mid-day so no event sits on a cutoff boundary.
    events = [_event(tenant, region, (NOW - timedelta(days=d)).replace(hour=12, minute=0, second=0, microsecond=0))
              for region in WINDOWS for d in range(400)]
    _load(stores, events)
    expected = {r: sum(1 for e in events if e.region == r and e.created_at >= NOW - timedelta(days=w))
                for r, w in WINDOWS.items()}

    dry = {r: purge_region(postgres, milvus, r, w, now=NOW, dry_run=True) for r, w in WINDOWS.items()}
    for region in WINDOWS:
        assert dry[region].removed["pg_events"] >= 400 - expected[region]
        assert _counts(stores, tenant, region) == (400, 400, 400), "a dry run changes nothing"

    reports = {r: purge_region(postgres, milvus, r, w, now=NOW) for r, w in WINDOWS.items()}
    for region, window in WINDOWS.items():
        assert _counts(stores, tenant, region) == (expected[region],) * 3
        assert _counts(stores, tenant, region, before=NOW - timedelta(days=window)) == (0, 0, 0)
        assert reports[region].partitions_dropped, "whole expired days of events go by partition drop"
        assert all(p.startswith("memory_events_p") for p in reports[region].partitions_dropped)
        # Vectors are hash-partitioned by tenant: every expired one goes by row DELETE, the partitions stay.
        assert reports[region].removed["pg_vectors"] == 400 - expected[region]
        assert reports[region].rows_deleted >= 400 - expected[region]
        assert reports[region].removed["pg_events"] >= 400 - expected[region]
        assert reports[region].removed == {k: v for k, v in dry[region].removed.items()}
    with postgres.maintenance_transaction() as conn:
        audits = conn.execute("SELECT details FROM amem.audit_log WHERE action = 'retention_purge'"
                              " AND at >= %s", (NOW,)).fetchall()
    assert len(audits) >= 2

    again = {r: purge_region(postgres, milvus, r, w, now=NOW) for r, w in WINDOWS.items()}
    assert all(report.total == 0 for report in again.values()), "a second purge removes nothing"
    with postgres.maintenance_transaction() as conn:
        for region in WINDOWS:
            assert pg_vector_table.partitioned_by(conn, f"amem_{region}", "memory_vectors") == "h"
            assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass",
                                (f"amem_{region}.memory_vectors",)).fetchone()[0] == pg_vector_table.VECTOR_PARTITIONS
    with postgres.tenant_transaction(tenant) as conn:
        kept = [e for e in events if e.region == "eu" and e.created_at >= NOW - timedelta(days=WINDOWS["eu"])]
        probe = np.random.default_rng(1).normal(size=(len(events), 384)).astype(np.float32)[events.index(kept[0])]
        hits = pg_memory.search(conn, tenant, "eu", probe, k=1)
    assert hits[0].event_id == kept[0].event_id, "the retained vectors are still searchable"


def test_erasure_removes_one_subject_everywhere_and_replay_does_not_resurrect(stores):
    postgres, milvus, kafka = stores
    kafka.provision_topics()
    tenant = f"era-{uuid.uuid4().hex[:8]}"
    secret = f"the secret diary of subject two {uuid.uuid4().hex}"
    events = [_event(tenant, region, NOW - timedelta(hours=i), subject=subject,
                     text=secret if subject == "subject-2" else f"note {i}")
              for i, (region, subject) in enumerate([(r, s) for r in WINDOWS
                                                     for s in ("subject-1", "subject-2", "subject-3")] * 3)]
    _load(stores, events)
    per_subject = {s: sum(1 for e in events if e.subject_id == s) for s in ("subject-1", "subject-2", "subject-3")}

    report = erase_subject(postgres, milvus, kafka, tenant, "subject-2", tuple(WINDOWS), actor="test")
    assert report.removed == {"pg_vectors": 6, "pg_events": 6, "milvus_vectors": 6}
    with postgres.tenant_transaction(tenant) as conn:
        assert pg_lifecycle.count_subject_rows(conn, tenant, "subject-2", tuple(WINDOWS)) == 0
        for subject in ("subject-1", "subject-3"):
            assert pg_lifecycle.count_subject_rows(conn, tenant, subject, tuple(WINDOWS)) == 2 * per_subject[subject]
    with postgres.maintenance_transaction() as conn:  # the app role may append audit records, not read them
        audit = conn.execute("SELECT actor, subject_hash, details::text FROM amem.audit_log"
                             " WHERE action = 'erasure' AND tenant_id = %s", (tenant,)).fetchone()
    assert sum(milvus.count(tenant, r, subject_id="subject-2") for r in WINDOWS) == 0
    assert sum(milvus.count(tenant, r, subject_id="subject-1") for r in WINDOWS) == per_subject["subject-1"]
    assert audit[0] == "test" and audit[1] == pg_lifecycle.subject_hash(tenant, "subject-2")
    assert "subject-2" not in audit[2] and "secret diary" not in audit[2]

    # Replaying the same events (e.g. Kafka from offset 0) does not bring the subject back.
    outcome = store_events(postgres, {tenant: [(e, 0, i) for i, e in enumerate(events)]})
    assert outcome[tenant] == {"new": 0, "erased": 6}
    with postgres.tenant_transaction(tenant) as conn:
        assert pg_lifecycle.count_subject_rows(conn, tenant, "subject-2", tuple(WINDOWS)) == 0
    # A new memory about the subject after the erasure is a new memory and is kept.
    later = _event(tenant, "eu", datetime.now(UTC) + timedelta(seconds=1), subject="subject-2", text="new")
    assert store_events(postgres, {tenant: [(later, 0, 0)]})[tenant] == {"new": 1, "erased": 0}

    consumer = kafka.consumer()
    records, _ = read_from(consumer, kafka.erasures_topic, {0: 0}, max_messages=10_000,
                           deadline=time.monotonic() + 10)
    consumer.close()
    assert f"{tenant}/subject-2".encode() in {r.key for r in records}
