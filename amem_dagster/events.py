"""The memory-event contract: parse and validate one Kafka message into a MemoryEvent or reject it with a code."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from amem_dagster.errors import EventRejected

TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
MAX_TEXT_BYTES = 32 * 1024
MAX_METADATA_BYTES = 16 * 1024
# Text and metadata at their limits once JSON-escaped (a 1-byte control character becomes 6 bytes, an emoji
# 12 with ensure_ascii), plus the other fields.
MAX_MESSAGE_BYTES = 384 * 1024
MAX_AGENT_NAME = 128
MAX_EVENT_TYPE = 64
MAX_SUBJECT_ID = 256
# Clocks drift; a memory stamped days ahead would outlive its retention window.
MAX_FUTURE_SKEW = timedelta(hours=1)

REQUIRED = ("event_id", "tenant_id", "agent_name", "event_type", "text")
KNOWN = frozenset(REQUIRED + ("subject_id", "metadata", "region", "created_at"))


@dataclass(frozen=True)
class MemoryEvent:
    """One validated memory event, ready to store."""

    event_id: str
    tenant_id: str
    agent_name: str
    event_type: str
    text: str
    region: str
    created_at: datetime
    subject_id: str | None = None
    metadata: dict = field(default_factory=dict)
    trace_id: str | None = None


def is_valid_tenant_id(value: object) -> bool:
    return isinstance(value, str) and TENANT_ID_RE.fullmatch(value) is not None


def require_tenant_id(value: object) -> str:
    """Return a tenant id that is safe to use in SQL settings and Milvus filters, or raise EventRejected."""
    if not is_valid_tenant_id(value):
        raise EventRejected("bad_tenant_id", f"tenant_id must match {TENANT_ID_RE.pattern}")
    return value  # type: ignore[return-value]


def parse_event(
    value: bytes | None,
    *,
    key: bytes | None,
    timestamp_ms: int | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    regions: Sequence[str],
    default_region: str,
    now: datetime | None = None,
) -> MemoryEvent:
    """Validate one message of `memory.events`; raise EventRejected(code, detail) for anything off-contract."""
    if value is None:
        raise EventRejected("empty_message", "the message has no value")
    if key is None:
        # Runs select a tenant's records by key; a keyless event would be planned and never stored.
        raise EventRejected("missing_key", "the message has no key (the key must be the tenant_id)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise EventRejected("too_large", f"message is {len(value)} bytes, the limit is {MAX_MESSAGE_BYTES}")
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected("invalid_utf8", f"value is not UTF-8 at byte {exc.start}") from None
    try:
        body = json.loads(decoded, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, NaN/Infinity and integers longer than Python converts.
        raise EventRejected("not_json", f"value is not JSON: {getattr(exc, 'msg', None) or _first_line(exc)}") from None
    if not isinstance(body, dict):
        raise EventRejected("not_object", f"value is a JSON {type(body).__name__}, not an object")

    missing = [name for name in REQUIRED if name not in body or body[name] is None]
    if missing:
        raise EventRejected("missing_field", f"missing required field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise EventRejected("unknown_field", f"unknown field(s): {', '.join(_printable(u) for u in unknown[:5])}")

    event_id = _string(body, "event_id")
    try:
        event_id = str(uuid.UUID(event_id))
    except ValueError:
        raise EventRejected("bad_event_id", "event_id is not a UUID") from None

    tenant_id = require_tenant_id(body["tenant_id"])
    if key != tenant_id.encode():
        raise EventRejected("key_mismatch", "the message key is not the event's tenant_id")

    agent_name = _bounded_string(body, "agent_name", MAX_AGENT_NAME)
    event_type = _bounded_string(body, "event_type", MAX_EVENT_TYPE)

    text = _string(body, "text")
    if not text.strip():
        raise EventRejected("empty_text", "text is empty")
    text_bytes = len(text.encode("utf-8", errors="surrogatepass"))
    if text_bytes > MAX_TEXT_BYTES:
        raise EventRejected("too_large", f"text is {text_bytes} bytes, the limit is {MAX_TEXT_BYTES}")
    _reject_surrogates("text", text)
    if "\x00" in text:
        raise EventRejected("bad_characters", "text contains NUL characters, which Postgres cannot store")

    subject_id = None
    if body.get("subject_id") is not None:
        subject_id = _bounded_string(body, "subject_id", MAX_SUBJECT_ID)

    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise EventRejected("wrong_type", f"metadata must be an object, not {type(metadata).__name__}")
    metadata_bytes = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))
    if metadata_bytes > MAX_METADATA_BYTES:
        raise EventRejected("too_large", f"metadata is {metadata_bytes} bytes, the limit is {MAX_METADATA_BYTES}")
    _reject_surrogates("metadata", json.dumps(metadata, ensure_ascii=False))
    if _has_nul(metadata):
        raise EventRejected("bad_characters", "metadata contains NUL characters, which Postgres cannot store")

    region = body.get("region")
    if region is None:
        region = default_region
    if not isinstance(region, str):
        raise EventRejected("wrong_type", f"region must be a string, not {type(region).__name__}")
    if region not in regions:
        raise EventRejected("unknown_region", f"region {_printable(region)} is not one of {', '.join(regions)}")

    created_at = _created_at(body.get("created_at"), timestamp_ms, now or datetime.now(UTC))

    return MemoryEvent(
        event_id=event_id,
        tenant_id=tenant_id,
        agent_name=agent_name,
        event_type=event_type,
        text=text,
        region=region,
        created_at=created_at,
        subject_id=subject_id,
        metadata=metadata,
        trace_id=trace_id_from_headers(headers),
    )


def trace_id_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """The trace id of a valid W3C traceparent header; an invalid one is ignored rather than rejected."""
    for name, raw in headers or ():
        if name.lower() == "traceparent" and raw:
            match = TRACEPARENT_RE.match(raw.decode("ascii", errors="replace").strip())
            if match and match.group(1) != "0" * 32:
                return match.group(1)
    return None


def _string(body: dict, name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise EventRejected("wrong_type", f"{name} must be a string, not {type(value).__name__}")
    return value


def _bounded_string(body: dict, name: str, limit: int) -> str:
    value = _string(body, name)
    if not value.strip():
        raise EventRejected("empty_field", f"{name} is empty")
    if len(value) > limit:
        raise EventRejected("too_large", f"{name} is {len(value)} characters, the limit is {limit}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise EventRejected("bad_characters", f"{name} contains control characters")
    _reject_surrogates(name, value)
    return value


def _reject_surrogates(name: str, value: str) -> None:
    # JSON may carry lone "\udxxx" escapes that no UTF-8 store can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EventRejected("invalid_utf8", f"{name} contains an unpaired surrogate") from None


def _created_at(raw: object, timestamp_ms: int | None, now: datetime) -> datetime:
    if raw is None:
        if timestamp_ms is None or timestamp_ms <= 0:
            return now
        try:
            parsed = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise EventRejected("bad_created_at", "the Kafka timestamp is outside the calendar") from None
        return _not_future(parsed, now, "the Kafka timestamp")
    if not isinstance(raw, str):
        raise EventRejected("wrong_type", f"created_at must be an RFC 3339 string, not {type(raw).__name__}")
    if not RFC3339_RE.match(raw):
        raise EventRejected("bad_created_at", "created_at is not an RFC 3339 timestamp")
    try:
        # fromisoformat takes at most microseconds; RFC 3339 allows more digits.
        parsed = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", raw))
    except ValueError:
        raise EventRejected("bad_created_at", "created_at is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise EventRejected("bad_created_at", "created_at has no UTC offset")
    try:
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise EventRejected("bad_created_at", "created_at is outside the calendar once in UTC") from None
    return _not_future(parsed, now, "created_at")


def _not_future(moment: datetime, now: datetime, what: str) -> datetime:
    if moment > now + MAX_FUTURE_SKEW:
        raise EventRejected("bad_created_at", f"{what} is in the future")
    return moment


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__


def _printable(value: str, limit: int = 40) -> str:
    # Details travel in Kafka headers and logs: keep them short and free of control characters.
    return repr(value[:limit])
