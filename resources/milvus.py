"""Milvus vector store: one collection per region, tenant-scoped upsert, search, count and delete."""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np

from amem_dagster.events import require_tenant_id
from amem_dagster.observability import metrics
from amem_dagster.settings import REGION_RE
from resources.records import SearchHit, VectorRow

UPSERT_BATCH = 1000
MAX_EVENT_ID = 128
# VARCHAR max_length counts UTF-8 bytes; a subject id is up to 256 characters of up to 4 bytes each.
MAX_SUBJECT_BYTES = 1024
PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
COLLECTION_NOT_FOUND, COLLECTION_NOT_LOADED = 100, 101
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_lock = threading.Lock()
# (pid, uri, token) -> (MilvusClient, whether its server binds filter templates; Milvus Lite does not)
_connections: dict[tuple[int, str, str], tuple[Any, bool]] = {}
_ensured: set[tuple[str, str]] = set()


def _connection(uri: str, token: str) -> tuple[Any, bool]:
    # Keyed by pid too: a forked child must not reuse its parent's gRPC channel.
    key = (os.getpid(), uri, token)
    with _lock:
        if key not in _connections:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=uri, token=token)
            _connections[key] = (client, not client.get_server_version().startswith("milvus_lite"))
        return _connections[key]


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


class MilvusResource(dg.ConfigurableResource):
    """Tenant-isolated event vectors in Milvus (a server URI or a Milvus Lite .db file)."""

    uri: str
    token: str = ""
    dim: int = 384
    collection_prefix: str = "memory_vectors"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 128

    def collection_name(self, region: str) -> str:
        if not PREFIX_RE.match(self.collection_prefix):
            raise ValueError(f"collection_prefix {self.collection_prefix!r} is not a valid collection name")
        return f"{self.collection_prefix}_{require_region(region)}"

    def ensure_collection(self, region: str) -> str:
        name = self.collection_name(region)
        if (self.uri, name) in _ensured:
            return name
        from pymilvus import DataType
        from pymilvus.exceptions import MilvusException

        client, _ = _connection(self.uri, self.token)
        if not client.has_collection(name):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64 + 1 + MAX_EVENT_ID)
            schema.add_field("tenant_id", DataType.VARCHAR, max_length=64, is_partition_key=True)
            schema.add_field("event_id", DataType.VARCHAR, max_length=MAX_EVENT_ID)
            schema.add_field("region", DataType.VARCHAR, max_length=16)
            schema.add_field("created_at", DataType.INT64)
            schema.add_field("subject_id", DataType.VARCHAR, max_length=MAX_SUBJECT_BYTES)
            schema.add_field("model", DataType.VARCHAR, max_length=256)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
            index = client.prepare_index_params()
            index.add_index("embedding", index_type="HNSW", metric_type="COSINE",
                            params={"M": self.hnsw_m, "efConstruction": self.hnsw_ef_construction})
            try:
                client.create_collection(name, schema=schema, index_params=index)
            except MilvusException:
                if not client.has_collection(name):  # otherwise another process created it first
                    raise
        field = next(f for f in client.describe_collection(name)["fields"] if f["name"] == "embedding")
        if int(field["params"]["dim"]) != self.dim:
            raise ValueError(f"collection {name} stores {field['params']['dim']}-d vectors, not {self.dim}-d")
        client.load_collection(name)
        _ensured.add((self.uri, name))
        return name

    def upsert(self, rows: Sequence[VectorRow], *, flush: bool = True) -> int:
        """Write rows by pk; with flush=False the caller flushes once at the end (Milvus rate-limits flush)."""
        by_region: dict[str, dict[str, dict]] = defaultdict(dict)
        for row in rows:
            entity = self._entity(row)
            by_region[row.region][entity["pk"]] = entity  # the last row for a key wins, as in one upsert
        with metrics.timed(metrics.STORE_WRITE_SECONDS, metrics.MILVUS):
            for region, entities in by_region.items():
                batch = list(entities.values())
                for start in range(0, len(batch), UPSERT_BATCH):
                    self._call(region, "upsert", data=batch[start:start + UPSERT_BATCH])
            if flush:
                self.flush(by_region)
        written = sum(len(entities) for entities in by_region.values())
        metrics.wrote(metrics.MILVUS, written)
        return written

    def flush(self, regions: Iterable[str]) -> None:
        for region in regions:
            self._call(region, "flush")

    def search(self, tenant_id: str, region: str, vector: Sequence[float] | np.ndarray, *,
               k: int = 10, ef: int = 64) -> list[SearchHit]:
        if k < 1:
            raise ValueError("k must be at least 1")
        query = self._vector(vector)
        where = self._where(tenant_id, region)
        metrics.read(metrics.MILVUS)
        with metrics.timed(metrics.SEARCH_SECONDS, metrics.MILVUS):
            result = self._call(
                region, "search", data=[query], limit=k, anns_field="embedding", output_fields=["event_id"],
                search_params={"metric_type": "COSINE", "params": {"ef": max(ef, k)}}, **where,
            )
        return [SearchHit(event_id=hit["entity"]["event_id"], score=float(hit["distance"])) for hit in result[0]]

    def count(self, tenant_id: str, region: str, *, subject_id: str | None = None,
              created_before: datetime | None = None) -> int:
        where = self._where(tenant_id, region, subject_id=subject_id, created_before=created_before)
        metrics.read(metrics.MILVUS)
        rows = self._call(region, "query", output_fields=["count(*)"], consistency_level="Strong", **where)
        return int(rows[0]["count(*)"])

    def delete(self, tenant_id: str, region: str, *, event_ids: Sequence[str] | None = None,
               subject_id: str | None = None, created_before: datetime | None = None,
               all_of_tenant: bool = False) -> int:
        selected = event_ids is not None or subject_id is not None or created_before is not None
        if selected == all_of_tenant:
            raise ValueError("name event_ids, subject_id or created_before, or pass all_of_tenant=True alone")
        where = self._where(tenant_id, region, event_ids=event_ids, subject_id=subject_id,
                            created_before=created_before)
        if event_ids is not None and not event_ids:
            return 0
        result = self._call(region, "delete", **where)
        deleted = int(result.get("delete_count", 0)) if isinstance(result, dict) else len(result)
        if deleted:
            self.flush([region])
        return deleted

    def _call(self, region: str, method: str, **kwargs: Any) -> Any:
        """Run one client call on the region's collection, loading or re-creating it once if Milvus asks."""
        from pymilvus.exceptions import MilvusException

        name = self.ensure_collection(region)
        client, _ = _connection(self.uri, self.token)
        try:
            return getattr(client, method)(name, **kwargs)
        except MilvusException as exc:
            if exc.code not in (COLLECTION_NOT_LOADED, COLLECTION_NOT_FOUND):
                raise
        _ensured.discard((self.uri, name))
        self.ensure_collection(region)
        return getattr(client, method)(name, **kwargs)

    def _where(self, tenant_id: str, region: str, **conditions: Any) -> dict[str, Any]:
        expr, params = tenant_filter(tenant_id, region, **conditions)
        _, templating = _connection(self.uri, self.token)
        if templating:
            return {"filter": expr, "filter_params": params}
        return {"filter": render_literals(expr, params)}

    def _vector(self, value: Sequence[float] | np.ndarray) -> list[float]:
        array = np.asarray(value, dtype=np.float32).reshape(-1)
        if array.shape[0] != self.dim:
            raise ValueError(f"vector has {array.shape[0]} dimensions, the collection has {self.dim}")
        return array.tolist()

    def _entity(self, row: VectorRow) -> dict[str, Any]:
        tenant_id = require_tenant_id(row.tenant_id)
        require_region(row.region)
        if not row.event_id or len(row.event_id) > MAX_EVENT_ID:
            raise ValueError(f"event_id must be 1 to {MAX_EVENT_ID} characters")
        subject_id = row.subject_id or ""
        if len(subject_id.encode("utf-8")) > MAX_SUBJECT_BYTES:
            raise ValueError(f"subject_id is longer than {MAX_SUBJECT_BYTES} UTF-8 bytes")
        return {
            "pk": f"{tenant_id}/{row.event_id}", "tenant_id": tenant_id, "event_id": row.event_id,
            "region": row.region, "created_at": epoch_ms(row.created_at), "subject_id": subject_id,
            "model": row.model, "embedding": self._vector(row.embedding),
        }
