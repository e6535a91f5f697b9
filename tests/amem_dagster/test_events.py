"""parse_event: the memory-event contract, one rule at a time, with the exact rejection code."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from amem_dagster.errors import EventRejected
from amem_dagster.events import MAX_MESSAGE_BYTES, MAX_TEXT_BYTES, MemoryEvent, parse_event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANT = "acme-1"
EVENT_ID = "6f1c2a4e-8a47-4a39-9a57-0f3d1d0f6b21"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _body(**changes) -> dict:
    body = {"event_id": EVENT_ID, "tenant_id": TENANT, "agent_name": "planner", "event_type": "Observation",
            "text": "the user prefers tea"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def _parse(body: dict | bytes | None, *, key: bytes | None = TENANT.encode(), timestamp_ms: int | None = None,
           headers=None) -> MemoryEvent:
    value = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    return parse_event(value, key=key, timestamp_ms=timestamp_ms, headers=headers, regions=("eu", "us"),
                       default_region="eu", now=NOW)


def _code(body, **kwargs) -> str:
    with pytest.raises(EventRejected) as info:
        _parse(body, **kwargs)
    assert info.value.code and str(info.value).startswith(info.value.code + ": ")
    return info.value.code


def test_full_event():
    event = _parse(_body(subject_id="person-7", metadata={"tool": "search", "n": [1, 2]}, region="us",
                         created_at="2026-02-28T10:00:00.250+02:00"),
                   headers=[("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())])
    assert event == MemoryEvent(event_id=EVENT_ID, tenant_id=TENANT, agent_name="planner", event_type="Observation",
                                text="the user prefers tea", region="us",
                                created_at=datetime(2026, 2, 28, 8, 0, 0, 250_000, tzinfo=UTC),
                                subject_id="person-7", metadata={"tool": "search", "n": [1, 2]}, trace_id=TRACE)


def test_minimal_event_gets_defaults():
    event = _parse(_body(event_id=EVENT_ID.upper().replace("-", "")))
    assert event.event_id == EVENT_ID  # normalised to the canonical UUID form
    assert (event.region, event.subject_id, event.metadata, event.trace_id) == ("eu", None, {}, None)
    assert event.created_at == NOW  # neither created_at nor a Kafka timestamp


def test_created_at_defaults_to_kafka_timestamp():
    ts = int(datetime(2026, 2, 1, 9, 30, 15, 123_000, tzinfo=UTC).timestamp() * 1000)
    assert _parse(_body(), timestamp_ms=ts).created_at == datetime(2026, 2, 1, 9, 30, 15, 123_000, tzinfo=UTC)
    explicit = _parse(_body(created_at="2026-01-01T00:00:00Z"), timestamp_ms=ts)
    assert explicit.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert _parse(_body(), timestamp_ms=-1).created_at == NOW  # "no timestamp" in old message formats


@pytest.mark.parametrize(("body", "kwargs", "code"), [
    (None, {}, "empty_message"),
    (_body(), {"key": None}, "missing_key"),
    (b" " * (MAX_MESSAGE_BYTES + 1), {}, "too_large"),
    (b'{"text": "caf\xe9"}', {}, "invalid_utf8"),
    (b"{not json", {}, "not_json"),
    (b"[" * 100_000, {}, "not_json"),  # too deeply nested
    (b"[1, 2]", {}, "not_object"),
    (b'"a string"', {}, "not_object"),
    (_body(text=...), {}, "missing_field"),
    (_body(agent_name=None), {}, "missing_field"),
    (_body(color="red"), {}, "unknown_field"),
    (_body(event_id="not-a-uuid"), {}, "bad_event_id"),
    (_body(tenant_id="Acme"), {"key": b"Acme"}, "bad_tenant_id"),
    (_body(tenant_id="-acme"), {"key": b"-acme"}, "bad_tenant_id"),
    (_body(tenant_id='a" or tenant_id != "'), {"key": b'a" or tenant_id != "'}, "bad_tenant_id"),
    (_body(tenant_id="acme\n"), {"key": b"acme\n"}, "bad_tenant_id"),
    (_body(), {"key": b"other"}, "key_mismatch"),
    (_body(agent_name="  "), {}, "empty_field"),
    (_body(event_type=""), {}, "empty_field"),
    (_body(agent_name="plan\nner"), {}, "bad_characters"),
    (_body(subject_id="x\x7fy"), {}, "bad_characters"),
    (_body(agent_name="a" * 129), {}, "too_large"),
    (_body(event_type="e" * 65), {}, "too_large"),
    (_body(subject_id="s" * 257), {}, "too_large"),
    (_body(text=" \n\t "), {}, "empty_text"),
    (_body(text=7), {}, "wrong_type"),
    (_body(event_id=123), {}, "wrong_type"),
    (_body(agent_name=["a"]), {}, "wrong_type"),
    (_body(metadata=[1]), {}, "wrong_type"),
    (_body(region=5), {}, "wrong_type"),
    (_body(created_at=1767225600), {}, "wrong_type"),
    (_body(metadata={"k": "v" * (16 * 1024)}), {}, "too_large"),
    (b'{"event_id": "%s", "tenant_id": "acme-1", "agent_name": "a", "event_type": "e", "text": "\\ud800"}'
     % EVENT_ID.encode(), {}, "invalid_utf8"),
    (b'{"event_id": "%s", "tenant_id": "acme-1", "agent_name": "a", "event_type": "e", "text": "t",'
     b' "metadata": {"\\udfff": 1}}' % EVENT_ID.encode(), {}, "invalid_utf8"),
    (_body(region="mars"), {}, "unknown_region"),
    (_body(region="EU"), {}, "unknown_region"),
    (_body(created_at="yesterday"), {}, "bad_created_at"),
    (_body(created_at="2026-02-28T10:00:00"), {}, "bad_created_at"),  # naive: no UTC offset
    (_body(created_at=(NOW + timedelta(hours=1, seconds=1)).isoformat()), {}, "bad_created_at"),  # future
], ids=lambda v: v if isinstance(v, str) else "")
def test_rejections(body, kwargs, code):
    assert _code(body, **kwargs) == code


def test_future_skew_boundary_is_accepted():
    at = NOW + timedelta(hours=1)
    assert _parse(_body(created_at=at.isoformat())).created_at == at


@pytest.mark.parametrize(("headers", "trace_id"), [
    ([("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())], TRACE),
    ([("TraceParent", f" 00-{TRACE}-00f067aa0ba902b7-00 ".encode())], TRACE),
    ([("other", b"x"), ("traceparent", b"junk"), ("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())], TRACE),
    ([("traceparent", b"junk")], None),
    ([("traceparent", f"00-{TRACE.upper()}-00f067aa0ba902b7-01".encode())], None),
    ([("traceparent", f"01-{TRACE}-00f067aa0ba902b7-01".encode())], None),
    ([("traceparent", b"\xff\xfe")], None),
    ([("traceparent", None)], None),
    ([("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01".encode())], None),  # all-zero trace id
    ([], None),
    (None, None),
])
def test_traceparent(headers, trace_id):
    assert _parse(_body(), headers=headers).trace_id == trace_id


def test_text_size_boundary_in_utf8_bytes():
    assert len(_parse(_body(text="a" * MAX_TEXT_BYTES)).text) == MAX_TEXT_BYTES
    assert _code(_body(text="a" * (MAX_TEXT_BYTES + 1))) == "too_large"
    euro = "€" * (MAX_TEXT_BYTES // 3) + "ab"  # 3-byte characters: exactly 32 KiB of UTF-8
    assert _parse(_body(text=euro)).text == euro
    assert _code(_body(text=euro + "c")) == "too_large"


def test_tenant_id_length_boundary():
    ok = "t" * 63
    assert _parse(_body(tenant_id=ok), key=ok.encode()).tenant_id == ok
    assert _code(_body(tenant_id=ok + "t"), key=(ok + "t").encode()) == "bad_tenant_id"


def test_hostile_strings_are_data_not_code():
    text = "'; DROP TABLE amem_eu.memory_events;-- \" or tenant_id != \""
    event = _parse(_body(text=text, agent_name="a' OR '1'='1", metadata={"q": 'x" || 1==1'}))
    assert event.text == text and event.tenant_id == TENANT


# --- regressions: each of these crashed parse_event or let an unstorable event through before the fixes ---

def test_huge_integer_is_not_json():
    value = json.dumps(_body()).encode()[:-1] + b', "metadata": {"n": ' + b"9" * 5000 + b"}}"
    assert _code(value) == "not_json"  # was a bare ValueError from the int-digits limit


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_numbers_are_not_json(constant):
    assert _code(json.dumps(_body()).encode()[:-1] + b', "metadata": {"score": ' + constant + b"}}") == "not_json"


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_created_at_at_datetime_limits(created_at):
    assert _code(_body(created_at=created_at)) == "bad_created_at"  # was an OverflowError


@pytest.mark.parametrize("timestamp_ms", [2**62, 2**63 - 1, 253_402_300_800_000])
def test_kafka_timestamp_beyond_the_calendar(timestamp_ms):
    assert _code(_body(), timestamp_ms=timestamp_ms) == "bad_created_at"  # was a ValueError


def test_future_kafka_timestamp_obeys_the_skew_rule():
    ahead = int((NOW + timedelta(hours=1, seconds=1)).timestamp() * 1000)
    assert _code(_body(), timestamp_ms=ahead) == "bad_created_at"
    at_limit = int((NOW + timedelta(hours=1)).timestamp() * 1000)
    assert _parse(_body(), timestamp_ms=at_limit).created_at == NOW + timedelta(hours=1)


def test_message_without_key():
    # Runs select a tenant's records by key: a keyless event used to be planned and then never stored.
    assert _code(_body(), key=None) == "missing_key"


@pytest.mark.parametrize("change", [{"text": "before\x00after"}, {"metadata": {"k": "a\x00b"}},
                                    {"metadata": {"a\x00": 1}}, {"metadata": {"l": [{"deep": ["\x00"]}]}}],
                         ids=["text", "metadata-value", "metadata-key", "metadata-nested"])
def test_nul_characters_postgres_cannot_store(change):
    assert _code(_body(**change)) == "bad_characters"


@pytest.mark.parametrize("region", [False, 0, [], {}, ""])
def test_falsy_non_string_region_is_not_the_default(region):
    assert _code(_body(region=region)) == ("unknown_region" if region == "" else "wrong_type")


def test_largest_valid_event_fits_the_message_limit():
    text = "😀" * (MAX_TEXT_BYTES // 4)  # exactly 32 KiB of UTF-8, 96 KiB once json.dumps escapes it
    metadata = {"note": "😀" * 4000}  # about 15.6 KiB of UTF-8 JSON
    assert len(json.dumps(metadata, ensure_ascii=False).encode()) <= 16 * 1024
    assert _parse(_body(text=text, metadata=metadata)).text == text
    control = "\x01" * MAX_TEXT_BYTES  # 6 bytes each once escaped
    assert _parse(_body(text=control)).text == control


def test_uuid_forms_are_canonicalised():
    for form in (EVENT_ID.upper(), "{" + EVENT_ID + "}", "urn:uuid:" + EVENT_ID):
        assert _parse(_body(event_id=form)).event_id == EVENT_ID
    assert str(uuid.UUID(EVENT_ID)) == EVENT_ID
