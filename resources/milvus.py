"""Milvus vector store: a collection per region, tenant-scoped upsert/search/count/delete (layouts: milvus_layout).

On Milvus Lite each tenant has its own partition and every read names it, besides the tenant filter (which stays
the security boundary); a Milvus server keeps the tenant_id partition key. A Lite collection made by an earlier
version (partition key, so every search scans all tenants) is re-created with partitions if empty; otherwise
it keeps working as it is, slowly, with a warning, until `MilvusResource.relayout(region)` rebuilds it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
import numpy as np

from amem_dagster.events import require_tenant_id
from amem_dagster.observability import metrics
from resources import milvus_layout as layout
from resources.milvus_filter import epoch_ms, render_literals, require_region, tenant_filter
from resources.records import SearchHit, VectorRow

__all__ = ["MilvusResource", "epoch_ms", "render_literals", "require_region", "tenant_filter"]

WRITE_BATCH = 1000
PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
COLLECTION_NOT_FOUND, COLLECTION_NOT_LOADED = 100, 101
log = logging.getLogger(__name__)

_lock = threading.Lock()
# (pid, uri, token) -> (MilvusClient, whether its server binds filter templates; Milvus Lite does not)
_connections: dict[tuple[int, str, str], tuple[Any, bool]] = {}
# (uri, collection) -> its layout, and the tenant partitions known to exist in it
_ensured: dict[tuple[str, str], str] = {}
_partitions: dict[tuple[str, str], set[str]] = defaultdict(set)


def _connection(uri: str, token: str) -> tuple[Any, bool]:
    # Keyed by pid too: a forked child must not reuse its parent's gRPC channel.
    key = (os.getpid(), uri, token)
    with _lock:
        if key not in _connections:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=uri, token=token)
            _connections[key] = (client, not client.get_server_version().startswith("milvus_lite"))
        return _connections[key]


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
        return self._collection(region)[0]

    def _collection(self, region: str) -> tuple[str, str]:
        """The region's collection (created, loaded) and its layout."""
        from pymilvus.exceptions import MilvusException

        name = self.collection_name(region)
        if (self.uri, name) in _ensured:
            return name, _ensured[(self.uri, name)]
        client, templating = _connection(self.uri, self.token)
        wanted = layout.PARTITION_KEY if templating else layout.TENANT_PARTITIONS
        if not templating:
            layout.recover(client, name)
        if not client.has_collection(name):
            try:
                self._create(client, name, wanted)
            except MilvusException:
                if not client.has_collection(name):  # otherwise another process created it first
                    raise
        description = client.describe_collection(name)
        field = next(f for f in description["fields"] if f["name"] == "embedding")
        if int(field["params"]["dim"]) != self.dim:
            raise ValueError(f"collection {name} stores {field['params']['dim']}-d vectors, not {self.dim}-d")
        found = layout.layout_of(description)
        client.load_collection(name)
        if found != wanted and not templating:
            found = self._outdated(client, name, region, found)
        if found == layout.TENANT_PARTITIONS:
            _partitions[(self.uri, name)].update(client.list_partitions(name))
        _ensured[(self.uri, name)] = found
        return name, found

    def _create(self, client: Any, name: str, kind: str) -> None:
        layout.create(client, name, dim=self.dim, layout=kind, m=self.hnsw_m, ef_construction=self.hnsw_ef_construction)

    def _outdated(self, client: Any, name: str, region: str, found: str) -> str:
        rows = int(client.query(name, output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
        if rows == 0:  # nothing to lose: re-create it with the layout searches need
            client.drop_collection(name)
            self._create(client, name, layout.TENANT_PARTITIONS)
            client.load_collection(name)
            return layout.TENANT_PARTITIONS
        log.warning("Milvus collection %s (%d rows) has the %s layout, so every search scans all tenants; "
                    "run `amem milvus-relayout --region %s` (MilvusResource.relayout) with no other writer to "
                    "rebuild it with a partition per tenant", name, rows, found, region)
        return found

    def relayout(self, region: str) -> int:
        """Rebuild a Milvus Lite collection of an earlier version with a partition per tenant; rows copied."""
        name, found = self._collection(region)
        client, templating = _connection(self.uri, self.token)
        if templating or found == layout.TENANT_PARTITIONS:
            return 0
        _ensured.pop((self.uri, name), None)
        _partitions.pop((self.uri, name), None)
        copied = layout.relayout(client, name, dim=self.dim, m=self.hnsw_m, ef_construction=self.hnsw_ef_construction)
        self._collection(region)
        return copied

    def upsert(self, rows: Sequence[VectorRow], *, flush: bool = True) -> int:
        """Write rows by pk; with flush=False the caller flushes once at the end (Milvus rate-limits flush)."""
        by_region: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
        for row in rows:
            entity = self._entity(row)
            by_region[row.region][entity["tenant_id"]][entity["pk"]] = entity  # the last row for a key wins
        with metrics.timed(metrics.STORE_WRITE_SECONDS, metrics.MILVUS):
            for region, tenants in by_region.items():
                self._write(region, tenants)
            if flush:
                self.flush(by_region)
        written = sum(len(entities) for tenants in by_region.values() for entities in tenants.values())
        metrics.wrote(metrics.MILVUS, written)
        return written

    def _write(self, region: str, tenants: dict[str, dict[str, dict]]) -> None:
        name, found = self._collection(region)
        client, templating = _connection(self.uri, self.token)
        # Lite resolves a primary key to its newest row on every read, so a whole-row insert replaces the old row
        # there, without upsert's per-row lookup of the old row in every segment; a server needs upsert.
        method = "upsert" if templating else "insert"
        if found == layout.PARTITION_KEY:
            batches = [("", [e for entities in tenants.values() for e in entities.values()])]
        else:
            batches = [(layout.tenant_partition(t), list(entities.values())) for t, entities in tenants.items()]
            layout.ensure_partitions(client, name, {p for p, _ in batches}, _partitions[(self.uri, name)])
        for partition, batch in batches:
            for start in range(0, len(batch), WRITE_BATCH):
                self._call(region, method, data=batch[start:start + WRITE_BATCH], partition_name=partition)

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
        where.pop("partition_names", None)  # Lite's delete scans the whole collection whatever partition is named
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
        _ensured.pop((self.uri, name), None)
        _partitions.pop((self.uri, name), None)
        self.ensure_collection(region)
        return getattr(client, method)(name, **kwargs)

    def _where(self, tenant_id: str, region: str, **conditions: Any) -> dict[str, Any]:
        """Filter (and, on a tenant-partition collection, the tenant's partition) for one tenant's rows."""
        expr, params = tenant_filter(tenant_id, region, **conditions)
        _, templating = _connection(self.uri, self.token)
        where: dict[str, Any] = {"filter": expr, "filter_params": params} if templating else {
            "filter": render_literals(expr, params)}
        if self._collection(region)[1] == layout.TENANT_PARTITIONS:
            # A partition only narrows the scan; the tenant filter above still decides which rows match.
            where["partition_names"] = [layout.tenant_partition(tenant_id)]
        return where

    def _vector(self, value: Sequence[float] | np.ndarray) -> np.ndarray:
        array = np.asarray(value, dtype=np.float32).reshape(-1)
        if array.shape[0] != self.dim:
            raise ValueError(f"vector has {array.shape[0]} dimensions, the collection has {self.dim}")
        return array  # pymilvus packs a float32 array faster than a list of Python floats

    def _entity(self, row: VectorRow) -> dict[str, Any]:
        tenant_id = require_tenant_id(row.tenant_id)
        require_region(row.region)
        if not row.event_id or len(row.event_id) > layout.MAX_EVENT_ID:
            raise ValueError(f"event_id must be 1 to {layout.MAX_EVENT_ID} characters")
        subject_id = row.subject_id or ""
        if len(subject_id.encode("utf-8")) > layout.MAX_SUBJECT_BYTES:
            raise ValueError(f"subject_id is longer than {layout.MAX_SUBJECT_BYTES} UTF-8 bytes")
        return {
            "pk": f"{tenant_id}/{row.event_id}", "tenant_id": tenant_id, "event_id": row.event_id,
            "region": row.region, "created_at": epoch_ms(row.created_at), "subject_id": subject_id,
            "model": row.model, "embedding": self._vector(row.embedding),
        }
