"""Hostile events through the real broker and sensor: each rejected one lands in the DLQ with its reason, the
valid ones (whatever their text) are stored for their own tenant only, and nothing reaches the victim tenant."""

from __future__ import annotations

import json
import uuid

import pytest

from resources import pg_memory
from resources.dead_letters import DETAIL_HEADER, ERROR_HEADER, SOURCE_HEADER, header
from tests.amem_dagster.test_observability import Pipeline, event, tenants

pytestmark = pytest.mark.integration


def _body(tenant: str, **fields) -> dict:
    return {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "agent_name": "planner", "event_type": "Obs",
            "text": "hello", **fields}


def test_every_hostile_event_is_dead_lettered_with_its_reason(service_env, dagster_instance):
    pipeline = Pipeline.create(service_env, dagster_instance, prefix="dlqiso")
    attacker, victim = tenants(2, "dlqiso")
    injections = ['" or tenant_id != "', "' OR '1'='1", f"{victim}' --", 'x" || "1" == "1', "a\\", "{tenant_id}"]
    bad: list[tuple[str, bytes | None, bytes | None]] = []
    for injection in injections:
        tenant_id = f"{attacker}{injection}"
        bad.append(("bad_tenant_id", tenant_id.encode(), json.dumps(_body(tenant_id)).encode()))
    bad += [
        ("bad_tenant_id", b"ACME", json.dumps(_body("ACME")).encode()),
        ("bad_tenant_id", b"a" * 64, json.dumps(_body("a" * 64)).encode()),
        ("bad_tenant_id", b"", json.dumps(_body("")).encode()),
        ("bad_tenant_id", b"1", json.dumps(_body(1)).encode()),
        ("key_mismatch", victim.encode(), json.dumps(_body(attacker)).encode()),  # into the victim's partition key
        ("key_mismatch", attacker.encode(), json.dumps(_body(victim)).encode()),  # posing as the victim
        ("missing_key", None, json.dumps(_body(attacker)).encode()),
        ("invalid_utf8", attacker.encode(), b'{"tenant_id": "' + attacker.encode() + b'\xff\xfe"}'),
        ("invalid_utf8", attacker.encode(), json.dumps(_body(attacker, text="\ud800 lone")).encode()),
        ("bad_characters", attacker.encode(), json.dumps(_body(attacker, agent_name="a\nb")).encode()),
        ("bad_characters", attacker.encode(), json.dumps(_body(attacker, text="nul \x00 here")).encode()),
        ("bad_characters", attacker.encode(), json.dumps(_body(attacker, metadata={"k": "\x00"})).encode()),
        ("unknown_region", attacker.encode(), json.dumps(_body(attacker, region='eu" or 1==1 or "')).encode()),
        ("unknown_region", attacker.encode(), json.dumps(_body(attacker, region="amem_us")).encode()),
        ("too_large", attacker.encode(), json.dumps(_body(attacker, subject_id="s" * 300)).encode()),
        ("too_large", attacker.encode(), json.dumps(_body(attacker, text="x" * 40_000)).encode()),
        ("too_large", attacker.encode(), b" " * (400 * 1024)),
        ("wrong_type", attacker.encode(), json.dumps(_body(attacker, metadata=["not", "an", "object"])).encode()),
        ("unknown_field", attacker.encode(), json.dumps({**_body(attacker), "tenant_id ": victim}).encode()),
        ("not_json", attacker.encode(), b"{\"tenant_id\": \"" + attacker.encode() + b"\", \"text\": "),
        ("not_json", attacker.encode(), b"NaN"),
        ("not_object", attacker.encode(), b"[1, 2]"),
        ("bad_event_id", attacker.encode(), json.dumps(_body(attacker, event_id="'; DROP TABLE x; --")).encode()),
        ("empty_message", attacker.encode(), None),
    ]
    # Valid events whose text and metadata look like attacks: stored verbatim, for the attacker only.
    valid = [(attacker.encode(), event(attacker, text)) for text in injections] + [
        (attacker.encode(), event(attacker, "meta", metadata={"tenant_id": victim, "q": '" or 1==1'})),
        (victim.encode(), event(victim, "the victim's own memory"))]
    placed = pipeline.produce([*((key, value) for _, key, value in bad), *valid])
    result = pipeline.tick()
    pipeline.run_all(result)

    dead = pipeline.read(pipeline.kafka.dlq_topic)
    by_source = {header(r, SOURCE_HEADER): r for r in dead}
    assert len(dead) == len(bad)
    for (code, key, value), where in zip(bad, placed, strict=False):
        record = by_source[pipeline.source(where)]
        assert header(record, ERROR_HEADER) == code, (code, key, value[:80] if value else value)
        assert header(record, DETAIL_HEADER)
        assert record.key == key and record.value == value  # the original message, untouched

    texts = {}
    for tenant in (attacker, victim):
        with pipeline.postgres.tenant_transaction(tenant) as conn:
            texts[tenant] = sorted(r[0] for r in conn.execute(
                "SELECT text FROM amem_eu.memory_events WHERE tenant_id = %s", (tenant,)))
            assert pg_memory.count_tenant(conn, tenant, "us") == (0, 0)
    assert texts[attacker] == sorted([*injections, "meta"])
    assert texts[victim] == ["the victim's own memory"]
    assert pipeline.milvus.count(victim, "eu") == 1
    assert pipeline.milvus.count(attacker, "eu") == len(injections) + 1
