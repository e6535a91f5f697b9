"""Postgres/Citus resource: a pooled connection per process, tenant-scoped and maintenance transactions."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date

import psycopg
from dagster import ConfigurableResource
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool
from pydantic import PrivateAttr

from amem_dagster.errors import ServiceUnavailable
from amem_dagster.events import require_tenant_id
from amem_dagster.settings import parse_regions
from resources import pg_schema

_pools: dict[str, ConnectionPool] = {}
_ready: set[tuple[str, str, int]] = set()
_lock = threading.Lock()


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)


class PostgresResource(ConfigurableResource):
    """Postgres (or a Citus coordinator) holding memory events and pgvector embeddings, one schema per region."""

    dsn: str
    regions: str = "eu,us"
    dim: int = 384
    pool_max_size: int = 4
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64

    _region_list: tuple[str, ...] = PrivateAttr(default=())

    def region_list(self) -> tuple[str, ...]:
        if not self._region_list:
            self._region_list = parse_regions(self.regions)
        return self._region_list

    def pool(self) -> ConnectionPool:
        """The process-wide pool for this DSN, created (and the schema ensured) on first use."""
        key = (self.dsn, self.regions, self.dim)
        with _lock:
            if key not in _ready:
                self._migrate()
                _ready.add(key)
            pool = _pools.get(self.dsn)
            if pool is None:
                pool = ConnectionPool(self.dsn, min_size=1, max_size=self.pool_max_size, configure=_configure,
                                      open=False, name="amem")
                try:
                    pool.open(wait=True, timeout=15)
                except Exception as exc:
                    raise ServiceUnavailable(f"Postgres is not reachable: {exc}") from None
                _pools[self.dsn] = pool
        return pool

    def _migrate(self) -> None:
        try:
            with psycopg.connect(self.dsn, connect_timeout=15) as conn:
                pg_schema.ensure_schema(conn, self.region_list(), self.dim, hnsw_m=self.hnsw_m,
                                        hnsw_ef_construction=self.hnsw_ef_construction)
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable(f"Postgres is not reachable: {str(exc).strip().splitlines()[0]}") from None

    @contextmanager
    def tenant_transaction(self, tenant_id: str) -> Iterator[psycopg.Connection]:
        """A transaction that can only see and write `tenant_id`'s rows (row-level security as the app role)."""
        tenant_id = require_tenant_id(tenant_id)
        with self.pool().connection() as conn, conn.transaction():
            conn.execute(f"SET LOCAL ROLE {pg_schema.APP_ROLE}")
            conn.execute("SELECT set_config(%s, %s, true)", (pg_schema.TENANT_SETTING, tenant_id))
            yield conn

    @contextmanager
    def maintenance_transaction(self) -> Iterator[psycopg.Connection]:
        """A cross-tenant transaction for operators' jobs (stats, purges); runs as the BYPASSRLS maintainer."""
        with self.pool().connection() as conn, conn.transaction():
            conn.execute(f"SET LOCAL ROLE {pg_schema.MAINTAINER_ROLE}")
            yield conn

    @contextmanager
    def owner_transaction(self) -> Iterator[psycopg.Connection]:
        """A transaction as the login role that owns the schema: DDL such as dropping expired partitions."""
        with self.pool().connection() as conn, conn.transaction():
            yield conn

    def ensure_partitions(self, region: str, days: Iterable[date]) -> None:
        """Create missing daily partitions as the schema owner. Checked every call, never cached: a purge in
        another process may have dropped a day since."""
        days = set(days)
        if not days:
            return
        with self.pool().connection() as conn, conn.transaction():
            pg_schema.ensure_partitions(conn, region, days)


def close_pools() -> None:
    """Close every pool of this process (tests and CLI exit)."""
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
        _ready.clear()
