"""Deterministic demo traffic for `memory.events`: contract-true events plus every kind of malformed message."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from amem_dagster.demo_texts import EVENT_TYPES, TOPICS, render
from amem_dagster.events import is_valid_tenant_id

Header = tuple[str, bytes]
Message = tuple[bytes, bytes, list[Header]]

AGENTS = ("retriever-1", "retriever-2", "planner", "executor", "evaluator")
# Bad-message kind → the rejection code `amem_dagster.events.parse_event` gives it.
BAD_KINDS: dict[str, str] = {
    "not_json": "not_json",
    "missing_field": "missing_field",
    "bad_tenant_id": "bad_tenant_id",
    "too_large": "too_large",
    "wrong_type": "wrong_type",
    "unknown_region": "unknown_region",
    "key_mismatch": "key_mismatch",
}
GOOD = "good"


@dataclass(frozen=True)
class DemoBatch:
    """Messages in send order, the kind of each (`good` or a BAD_KINDS key) and the counts people look at."""

    messages: list[Message]
    kinds: list[str]
    per_tenant: dict[str, int] = field(default_factory=dict)

    @property
    def good(self) -> int:
        return sum(self.per_tenant.values())

    @property
    def bad(self) -> int:
        return len(self.messages) - self.good

    @property
    def bad_kinds(self) -> dict[str, int]:
        return dict(Counter(kind for kind in self.kinds if kind != GOOD))


def tenant_ids(count: int, prefix: str = "tenant") -> list[str]:
    return [f"{prefix}-{n:03d}" for n in range(1, count + 1)]


def tenant_sizes(total: int, tenants: int, skew: float) -> list[int]:
    """Split `total` over tenants by Zipf weights 1/rank**skew (largest remainder); everyone gets one if possible."""
    if tenants <= 0 or total <= 0:
        return [0] * max(tenants, 0)
    weights = [1.0 / (rank ** skew) for rank in range(1, tenants + 1)]
    floor = 1 if total >= tenants else 0
    spare = total - floor * tenants
    shares = [spare * w / sum(weights) for w in weights]
    sizes = [floor + int(s) for s in shares]
    by_remainder = sorted(range(tenants), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def generate(
    *,
    tenants: int = 3,
    events: int = 300,
    bad_share: float = 0.05,
    skew: float = 0.0,
    seed: int = 0,
    regions: Sequence[str] = ("eu", "us"),
    default_region: str = "eu",
    tenant_prefix: str = "tenant",
    now: datetime | None = None,
) -> DemoBatch:
    """`events` messages in all, `round(events * bad_share)` of them malformed; same arguments (`now`
    included: created_at is set relative to it) give the same bytes."""
    if tenants < 1 or events < 0 or not 0.0 <= bad_share <= 1.0 or skew < 0 or not regions:
        raise ValueError("need tenants >= 1, events >= 0, 0 <= bad_share <= 1, skew >= 0 and a region")
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    ids = tenant_ids(tenants, tenant_prefix)
    if not all(map(is_valid_tenant_id, ids)):
        raise ValueError(f"tenant prefix {tenant_prefix!r} does not make valid tenant ids")
    bad = round(events * bad_share)
    sizes = tenant_sizes(events - bad, tenants, skew)
    kinds = [GOOD] * (events - bad) + [list(BAD_KINDS)[i % len(BAD_KINDS)] for i in range(bad)]
    owners = [t for t, n in zip(ids, sizes) for _ in range(n)] + [rng.choice(ids) for _ in range(bad)]
    order = list(range(events))
    rng.shuffle(order)

    messages: list[Message] = []
    for index in order:
        tenant = owners[index]
        body = _event(rng, tenant, regions, default_region, now)
        headers = [("traceparent", _traceparent(rng))] if rng.random() < 0.3 else []
        if kinds[index] == GOOD:
            messages.append((tenant.encode(), _dumps(body), headers))
        else:
            messages.append(_break(rng, kinds[index], body, tenant, ids, regions, headers))
    return DemoBatch(messages=messages, kinds=[kinds[i] for i in order],
                     per_tenant={t: n for t, n in zip(ids, sizes) if n})


def _event(rng: random.Random, tenant: str, regions: Sequence[str], default_region: str, now: datetime) -> dict:
    topic = rng.choice(TOPICS)
    event_type = rng.choice(EVENT_TYPES)
    body: dict = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "tenant_id": tenant,
        "agent_name": rng.choice(AGENTS),
        "event_type": event_type,
        "text": render(rng, topic, event_type),
    }
    if rng.random() < 0.4:
        body["subject_id"] = f"person-{rng.randrange(1, 40):03d}"
    if rng.random() < 0.7:
        body["metadata"] = {"topic": topic.name, "source": "amem-demo", "turn": rng.randrange(1, 50)}
    region = rng.choice(list(regions))
    if region != default_region or rng.random() < 0.5:
        body["region"] = region
    if rng.random() < 0.8:
        created = now - timedelta(seconds=rng.randrange(0, 6 * 3600))
        body["created_at"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return body


def _break(rng: random.Random, kind: str, body: dict, tenant: str, ids: Sequence[str], regions: Sequence[str],
           headers: list[Header]) -> Message:
    """Turn a good event into one malformed message of `kind` (with whatever key a buggy producer would use)."""
    key = tenant.encode()
    if kind == "not_json":
        return key, _dumps(body)[: rng.randrange(5, 40)], headers
    if kind == "missing_field":
        body.pop(rng.choice(("event_id", "tenant_id", "agent_name", "event_type", "text")))
    elif kind == "bad_tenant_id":
        body["tenant_id"] = rng.choice(("Tenant 001", "-leading-dash", "UPPER", "tenant/../etc", "x" * 80))
        key = body["tenant_id"].encode()
    elif kind == "too_large":
        body["text"] = ("A very long transcript line. " * 1200)[: 33 * 1024 + rng.randrange(1, 4000)]
    elif kind == "wrong_type":
        field_name, value = rng.choice((("text", 42), ("metadata", ["not", "an", "object"]),
                                        ("agent_name", {"name": "planner"}), ("created_at", 1700000000)))
        body[field_name] = value
    elif kind == "unknown_region":
        body["region"] = next(r for r in ("mars", "moon", "atlantis", "nowhere_9") if r not in regions)
    elif kind == "key_mismatch":
        others = [t for t in ids if t != tenant] or [f"{tenant}-other"]
        key = rng.choice(others).encode()
    else:
        raise ValueError(f"unknown bad kind {kind!r}")
    return key, _dumps(body), headers


def _traceparent(rng: random.Random) -> bytes:
    return f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode()


def _dumps(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
