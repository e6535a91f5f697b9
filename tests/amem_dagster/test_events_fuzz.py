"""Fuzzing parse_event: any input ends as a valid MemoryEvent or an EventRejected with a short code, nothing else.

The strategies include what used to crash or slip through (integers over 4300 digits, NaN, datetimes at the ends of
the calendar, any int64 Kafka timestamp, keyless messages, NUL characters); test_events.py pins each as a regression.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from amem_dagster.errors import EventRejected
from amem_dagster.events import KNOWN, MAX_TEXT_BYTES, REQUIRED, TENANT_ID_RE, MemoryEvent, parse_event

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REGIONS = ("eu", "us")
FUZZ = settings(max_examples=500, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CODE_RE = re.compile(r"[a-z][a-z0-9_]{1,30}")

HOSTILE = [
    "", " ", '"', "'", "\\", '" or tenant_id != "', "' OR '1'='1", "'; DROP TABLE x;--", "acme\" || true || \"",
    'tenant_id in ["a","b"]', "\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "\n", "acme\n", "ACME", "-acme", "a" * 64,
    "t" * 63, "a b", "é", "😀" * 3, "../../etc/passwd", "%s%s%n", "${jndi:ldap://x}", "eu", "us", "mars",
    "2026-02-28T10:00:00Z", "2026-02-28T10:00:00", "2999-01-01T00:00:00+00:00", "NaN", "null", "{}", "[]",
    str(uuid.UUID(int=0)), "urn:uuid:" + str(uuid.UUID(int=1)),
]
# str → JSON text with json.dumps' default ensure_ascii, so lone surrogates travel as "\udXXX" escapes.
short_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=("Cc", "Cs", "Zs", "Zl", "Po", "Lu", "Ll")), max_size=20),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE),
              st.text(st.characters(categories=("Cs", "Cc")), max_size=2)),
)
# Very long strings are built from a seed, which keeps Hypothesis' generation and reprs cheap.
long_text = st.builds(lambda seed, n: ((seed or "x") * n)[:n], short_text, st.sampled_from([9_000, 33_000]))
hostile_text = st.one_of(short_text, long_text)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), short_text)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(short_text, inner, max_size=3)), max_leaves=6)
tenant = st.one_of(st.from_regex(TENANT_ID_RE, fullmatch=True), hostile_text)
timestamps = st.datetimes(timezones=st.sampled_from([UTC, None, timezone(timedelta(hours=-5)),
                                                    timezone(timedelta(hours=14)), timezone(-timedelta(hours=23))]))
FIELD = {
    "event_id": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex.upper()), hostile_text),
    "tenant_id": tenant,
    "agent_name": hostile_text,
    "event_type": hostile_text,
    "text": hostile_text,
    "subject_id": st.one_of(st.none(), hostile_text),
    "metadata": st.one_of(st.none(), st.dictionaries(short_text, json_value | long_text, max_size=4), json_value),
    "region": st.one_of(st.none(), st.sampled_from(REGIONS), hostile_text),
    "created_at": st.one_of(st.none(), timestamps.map(datetime.isoformat), hostile_text),
}
headers = st.one_of(st.none(), st.lists(st.tuples(
    st.sampled_from(["traceparent", "TRACEPARENT", "x-other", ""]),
    st.one_of(st.none(), st.binary(max_size=60),
              st.builds(lambda t, s: f"00-{t}-{s}-01".encode(), st.text("0123456789abcdef", min_size=32, max_size=32),
                        st.text("0123456789abcdef", min_size=16, max_size=16)))), max_size=3))
kafka_ts = st.one_of(st.none(), st.integers(-2**40, int(NOW.timestamp() * 1000) + 7_200_000),
                     st.integers(-2**63, 2**63 - 1))


def _check(value: bytes | None, key: bytes | None, timestamp_ms, hdrs) -> None:
    try:
        parsed = parse_event(value, key=key, timestamp_ms=timestamp_ms, headers=hdrs, regions=REGIONS,
                            default_region="eu", now=NOW)
    except EventRejected as rejection:
        assert CODE_RE.fullmatch(rejection.code), rejection.code
        event(rejection.code)  # shown by --hypothesis-show-statistics only
        assert rejection.detail and len(rejection.detail) < 400
        return
    event("accepted")
    assert isinstance(parsed, MemoryEvent)
    assert TENANT_ID_RE.fullmatch(parsed.tenant_id)
    assert key == parsed.tenant_id.encode()
    assert str(uuid.UUID(parsed.event_id)) == parsed.event_id
    assert parsed.region in REGIONS
    assert parsed.text.strip() and len(parsed.text.encode("utf-8")) <= MAX_TEXT_BYTES and "\x00" not in parsed.text
    for name in ("agent_name", "event_type", "subject_id"):
        text = getattr(parsed, name)
        assert text is None or (text.strip() and not any(ord(c) < 32 or ord(c) == 127 for c in text))
    # Postgres jsonb refuses NaN, NUL and lone surrogates.
    json.dumps(parsed.metadata, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert not any("\x00" in text for text in _strings(parsed.metadata))
    assert parsed.created_at.tzinfo is not None and parsed.created_at <= NOW + timedelta(hours=1)
    assert parsed.trace_id is None or re.fullmatch(r"[0-9a-f]{32}", parsed.trace_id)


def _strings(value: object):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


VALID = json.dumps({"event_id": str(uuid.UUID(int=7)), "tenant_id": "acme", "agent_name": "planner",
                    "event_type": "Obs", "text": "hello", "region": "us"}).encode()
# Valid bytes with a random slice replaced: mostly near-JSON, so the parser gets past its first checks.
JUNK = [b"1" * 5000, b"NaN", b"-Infinity", b'"\\u0000"', b'"\\ud800"', b"[" * 5000, b"\x00", b"\xff", b"}"]
mutated = st.builds(lambda at, cut, junk: VALID[:at] + junk + VALID[at + cut:],
                    st.integers(0, len(VALID)), st.integers(0, 8), st.binary(max_size=8) | st.sampled_from(JUNK))
any_value = st.one_of(st.binary(max_size=300), mutated, mutated, st.just(VALID), st.none())
known_json = st.fixed_dictionaries({name: FIELD[name] | json_value for name in REQUIRED},
                                   optional={name: FIELD[name] | json_value for name in sorted(KNOWN - set(REQUIRED))})


@FUZZ
@given(value=any_value, key=st.one_of(st.just(b"acme"), st.none(), st.binary(max_size=70)),
       timestamp_ms=kafka_ts, hdrs=headers)
def test_arbitrary_bytes(value, key, timestamp_ms, hdrs):
    _check(value, key, timestamp_ms, hdrs)


@FUZZ
@given(body=st.one_of(known_json, known_json, st.dictionaries(st.sampled_from(sorted(KNOWN)) | short_text,
                                                               json_value | hostile_text, max_size=10)),
       key=st.one_of(st.binary(max_size=70), tenant.map(lambda t: t.encode("utf-8", "surrogatepass")), st.none()),
       timestamp_ms=kafka_ts)
def test_arbitrary_json_objects(body, key, timestamp_ms):
    _check(json.dumps(body).encode(), key, timestamp_ms, None)


@FUZZ
@given(data=st.data(), keyed=st.booleans(), timestamp_ms=kafka_ts, hdrs=headers)
def test_hostile_value_in_every_field(data, keyed, timestamp_ms, hdrs):
    """A well-formed event where each field may be replaced by a hostile value; often accepted, so both paths run."""
    body = {"event_id": str(uuid.UUID(int=42)), "tenant_id": "acme", "agent_name": "planner", "event_type": "Obs",
            "text": "hello"}
    for name, strategy in FIELD.items():
        if data.draw(st.integers(0, 3)) == 0:
            body[name] = data.draw(strategy, label=name)
    tenant_id = body["tenant_id"]
    key = tenant_id.encode("utf-8", "surrogatepass") if keyed and isinstance(tenant_id, str) else b"acme"
    _check(json.dumps(body).encode(), key, timestamp_ms, hdrs)
