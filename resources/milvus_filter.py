"""Milvus filter expressions: the one builder of tenant-scoped filters, and escaped literals for Milvus Lite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from amem_dagster.events import require_tenant_id
from amem_dagster.settings import REGION_RE

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def require_region(region: object) -> str:
    if not isinstance(region, str) or not REGION_RE.match(region):
        raise ValueError(f"region {region!r} is not a valid region name ({REGION_RE.pattern})")
    return region


def epoch_ms(value: datetime) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("times sent to Milvus must be datetimes with a UTC offset")
    return (value - EPOCH) // timedelta(milliseconds=1)


_CLAUSES = {
    "event_ids": "event_id in {event_ids}",
    "subject_id": "subject_id == {subject_id}",
    "created_before": "created_at < {created_before}",
}


def tenant_filter(tenant_id: str, region: str, **conditions: Any) -> tuple[str, dict[str, Any]]:
    """The one place filters are built: a template with {placeholders} and the values bound to them."""
    clauses = ["tenant_id == {tenant_id}", "region == {region}"]
    params: dict[str, Any] = {"tenant_id": require_tenant_id(tenant_id), "region": require_region(region)}
    for name, value in conditions.items():
        if name not in _CLAUSES:
            raise TypeError(f"unknown filter condition {name!r}")
        if value is not None:
            clauses.append(_CLAUSES[name])
            params[name] = _condition_value(name, value)
    return " and ".join(clauses), params


def _condition_value(name: str, value: Any) -> Any:
    if name == "created_before":
        return epoch_ms(value)
    if name == "subject_id" and isinstance(value, str):
        return _utf8(name, value)
    if name == "event_ids" and not isinstance(value, str) and all(isinstance(v, str) for v in value):
        return [_utf8(name, v) for v in value]
    raise TypeError(f"{name} must be {'a string' if name == 'subject_id' else 'a sequence of strings'}")


def _utf8(name: str, value: str) -> str:
    # A lone surrogate (invalid UTF-8 from a CLI argument) would fail inside pymilvus with no useful message.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not valid UTF-8") from None
    return value


def render_literals(expr: str, params: dict[str, Any]) -> str:
    """Inline bound values as escaped literals, for servers that reject templates (Milvus Lite 3.2)."""
    return expr.format_map({name: _literal(value) for name, value in params.items()})


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # Inside a double-quoted literal only these four characters are special to the Lite tokenizer.
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    raise TypeError(f"cannot use a {type(value).__name__} in a filter")
