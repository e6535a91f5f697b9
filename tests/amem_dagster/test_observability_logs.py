"""JSON-line logs of the real pipeline: the fields operators need, and never the memory text, metadata or subject."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from amem_dagster.observability import logs
from tests.amem_dagster.test_observability import (  # noqa: F401 - fixtures
    Pipeline,
    _named,
    event,
    pipeline,
    spans,
    tenants,
    traceparent,
)

pytestmark = pytest.mark.integration


def _json_lines(text: str) -> list[dict]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if str(record.get("logger", "")).startswith("amem"):
                found.append(record)
    return found


def test_logs_carry_identifiers_and_never_the_text_of_an_event(pipeline: Pipeline, spans, capsys):
    secret = f"SECRET-{uuid.uuid4().hex}"
    (tenant,) = tenants(1)
    trace_id = uuid.uuid4().hex
    good = event(tenant, f"my passport number is {secret}-text", agent_name="retriever", event_type="UserMessage",
                 subject_id=f"{secret}-subject", metadata={"note": f"{secret}-meta", "nested": [f"{secret}-deep"]})
    # Dead-lettered events keep their content in the DLQ only: not JSON, an unknown field named by the secret,
    # a bad region quoting it.
    broken = good[:-10]
    unknown_field = json.dumps({**json.loads(event(tenant)), f"{secret}-field": 1}).encode()
    bad_region = event(tenant, "x", region=f"{secret}-region")
    pipeline.produce([(tenant.encode(), good, [("traceparent", traceparent(trace_id))]),
                      (tenant.encode(), broken), (tenant.encode(), unknown_field), (tenant.encode(), bad_region)])
    result = pipeline.tick()
    [run] = pipeline.run_all(result)
    captured = capsys.readouterr()
    output = captured.out + captured.err

    lines = _json_lines(captured.err)
    by_msg: dict[str, list[dict]] = {}
    for line in lines:
        by_msg.setdefault(line["msg"], []).append(line)
    [received] = [r for r in by_msg["events received"] if r.get("tenant_id") == tenant]
    assert received["run_id"] == run.run_id and received["trace_id"] == trace_id
    assert (received["agent_name"], received["event_type"], received["count"]) == ("retriever", "UserMessage", 1)
    dead = [r for r in by_msg["event dead-lettered"] if r.get("tenant_id") == tenant]
    assert sorted(r["reason"] for r in dead) == ["not_json", "unknown_field", "unknown_region"]
    [tick] = [r for r in by_msg["memory_events_sensor tick"] if r["by_reason"] == {
        "not_json": 1, "unknown_field": 1, "unknown_region": 1}]
    assert tick["count"] == 1 and tick["rejected"] == 3
    assert any(r.get("tenant_id") == tenant and r["run_id"] == run.run_id for r in by_msg["events embedded"])
    assert all(set(r) <= {"ts", "level", "logger", "msg"} | logs.ALLOWED for r in lines)

    # Nowhere: not in any line this process wrote, not in Dagster's event log, not in a span attribute.
    assert secret not in output
    for entry in pipeline.instance.all_logs(run.run_id):
        assert secret not in str(entry)
    for span in spans.get_finished_spans():
        assert secret not in json.dumps(dict(span.attributes or {}), default=str), span.name
    assert _named(spans.get_finished_spans(), "memory_events")


def test_formatter_keeps_only_allowed_fields_on_one_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"amem.test.{uuid.uuid4().hex[:6]}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.info("stored", extra=logs.fields(tenant_id="acme", agent_name="a\nb\u2028c", text="private memory",
                                            metadata={"k": "private"}, subject_id="alice", count=3))
    try:
        raise ValueError("row (acme, private memory) violates a constraint")
    except ValueError:
        logger.exception("failed", extra=logs.fields(tenant_id="acme"))
    first, second = stream.getvalue().splitlines()
    record = json.loads(first)
    assert record["tenant_id"] == "acme" and record["count"] == 3 and record["agent_name"] == "a\nb\u2028c"
    assert "text" not in record and "metadata" not in record and "subject_id" not in record
    assert "private" not in first and "alice" not in first
    assert json.loads(second)["error"] == "ValueError" and "private" not in second


def test_configure_once_writes_json_to_stderr(capsys):
    logger = logs.configure()
    assert logs.configure() is logger and not logger.propagate
    assert sum(isinstance(h.formatter, logs.JsonFormatter) for h in logger.handlers) == 1
    logs.get("test").warning("hello", extra=logs.fields(tenant_id="acme", run_id="r1"))
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "hello" and line["tenant_id"] == "acme" and line["logger"] == "amem.test"
