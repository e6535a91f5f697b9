"""Postgres schema: one schema per region, daily event partitions, tenant-hashed vectors, row-level security, Citus.

Citus rules (DESIGN §5): tenant_id is the distribution column and leads every primary key; no foreign keys
between distributed tables; `amem.tenants` is a reference table. On plain Postgres the same DDL runs without
the distribution calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from amem_dagster.settings import REGION_RE
from resources import pg_vector_table

APP_ROLE = "amem_app"
MAINTAINER_ROLE = "amem_maintainer"
TENANT_SETTING = "amem.tenant_id"
TENANT_TABLES = ("memory_events", "memory_vectors")
# Range-partitioned by day, so a purge drops whole days; the vectors are hash-partitioned (pg_vector_table).
DAILY_TABLES = ("memory_events",)
PARTITION_DAYS_AHEAD = 7
# Bump when the DDL below changes; a database at another version is migrated on next start.
# 4: memory_vectors hash-partitioned by tenant with a halfvec HNSW index (migrated from 3's daily ranges).
SCHEMA_VERSION = 4


def region_schema(region: str) -> str:
    if not REGION_RE.fullmatch(region):
        raise ValueError(f"not a region name: {region!r}")
    return f"amem_{region}"


def has_citus(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is not None


def ensure_schema(conn: psycopg.Connection, regions: Iterable[str], dim: int, *, hnsw_m: int = 16,
                  hnsw_ef_construction: int = 64) -> None:
    """Create roles, schemas, tables, indexes and policies if missing; safe to run on every start."""
    # One schema migration at a time across processes (runs, CLI and daemon may all start together).
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('amem.schema'))")
    signature = f"{SCHEMA_VERSION}:{','.join(sorted(regions))}:{dim}:{hnsw_m}:{hnsw_ef_construction}"
    if _applied(conn) == signature:
        # DDL takes exclusive locks; once applied, only the partitions ahead of time need a look.
        _ensure_partitions_ahead(conn, regions)
        return
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    _ensure_roles(conn)
    citus = has_citus(conn)
    conn.execute("CREATE SCHEMA IF NOT EXISTS amem")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS amem.tenants ("
        " tenant_id text PRIMARY KEY, first_seen timestamptz NOT NULL DEFAULT now())"
    )
    if citus:
        _citus_once(conn, "SELECT create_reference_table('amem.tenants')", "amem.tenants")
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA amem TO {app}, {mnt}").format(
        app=sql.Identifier(APP_ROLE), mnt=sql.Identifier(MAINTAINER_ROLE)))
    # A tenant may see and register only itself; listing tenants is an operator's (maintainer's) query.
    _protect(conn, sql.Identifier("amem"), sql.Identifier("tenants"))
    _ensure_tenant_stats(conn, citus)
    _ensure_lifecycle(conn, citus)
    for region in regions:
        _ensure_region(conn, region, dim, citus, hnsw_m, hnsw_ef_construction)
    _ensure_partitions_ahead(conn, regions)
    conn.execute("CREATE TABLE IF NOT EXISTS amem.schema_version (signature text NOT NULL)")
    conn.execute("DELETE FROM amem.schema_version")
    conn.execute("INSERT INTO amem.schema_version VALUES (%s)", (signature,))


def _applied(conn: psycopg.Connection) -> str | None:
    if conn.execute("SELECT to_regclass('amem.schema_version')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT signature FROM amem.schema_version").fetchone()
    return row[0] if row else None


def _ensure_partitions_ahead(conn: psycopg.Connection, regions: Iterable[str]) -> None:
    today = datetime.now(UTC).date()
    for region in regions:
        ensure_partitions(conn, region, (today + timedelta(days=n) for n in range(PARTITION_DAYS_AHEAD + 1)))


def _ensure_roles(conn: psycopg.Connection) -> None:
    # NOLOGIN group roles: a login user is granted them; sessions switch with SET LOCAL ROLE.
    conn.execute(
        f"""DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS; END IF;
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MAINTAINER_ROLE}') THEN
            CREATE ROLE {MAINTAINER_ROLE} NOLOGIN NOSUPERUSER BYPASSRLS; END IF;
        END $$"""
    )
    conn.execute(sql.SQL("GRANT {app}, {mnt} TO CURRENT_USER").format(
        app=sql.Identifier(APP_ROLE), mnt=sql.Identifier(MAINTAINER_ROLE)))


def _ensure_tenant_stats(conn: psycopg.Connection, citus: bool) -> None:
    # Derived per-tenant figures (the memory_stats asset); small, so one table for all regions.
    conn.execute(
        """CREATE TABLE IF NOT EXISTS amem.tenant_stats (
             tenant_id text PRIMARY KEY,
             events bigint NOT NULL,
             pg_vectors bigint NOT NULL,
             milvus_vectors bigint NOT NULL,
             subjects bigint NOT NULL,
             event_types jsonb NOT NULL,
             first_event_at timestamptz,
             last_event_at timestamptz,
             updated_at timestamptz NOT NULL DEFAULT now())"""
    )
    if citus:
        _citus_once(conn, "SELECT create_distributed_table('amem.tenant_stats', 'tenant_id')", "amem.tenant_stats")
    _protect(conn, sql.Identifier("amem"), sql.Identifier("tenant_stats"))


def _ensure_lifecycle(conn: psycopg.Connection, citus: bool) -> None:
    # Erasure ledger: ingestion refuses events about an erased subject created before the erasure. The subject
    # is kept only as a salted hash, so the ledger holds no personal identifier in clear.
    conn.execute(
        """CREATE TABLE IF NOT EXISTS amem.erasures (
             tenant_id text NOT NULL,
             subject_hash text NOT NULL,
             erased_at timestamptz NOT NULL,
             PRIMARY KEY (tenant_id, subject_hash))"""
    )
    # Audit trail of purges and erasures: who, when, what was removed per store; never memory text.
    conn.execute(
        """CREATE TABLE IF NOT EXISTS amem.audit_log (
             audit_id bigserial,
             at timestamptz NOT NULL DEFAULT now(),
             actor text NOT NULL,
             action text NOT NULL,
             region text,
             tenant_id text,
             subject_hash text,
             details jsonb NOT NULL DEFAULT '{}',
             PRIMARY KEY (audit_id))"""
    )
    if citus:
        _citus_once(conn, "SELECT create_distributed_table('amem.erasures', 'tenant_id')", "amem.erasures")
        _citus_once(conn, "SELECT create_reference_table('amem.audit_log')", "amem.audit_log")
    _protect(conn, sql.Identifier("amem"), sql.Identifier("erasures"))
    conn.execute(sql.SQL("GRANT INSERT ON amem.audit_log TO {app}; GRANT USAGE ON SEQUENCE "
                         "amem.audit_log_audit_id_seq TO {app}, {mnt}; GRANT SELECT, INSERT ON amem.audit_log TO {mnt}")
                 .format(app=sql.Identifier(APP_ROLE), mnt=sql.Identifier(MAINTAINER_ROLE)))


def _protect(conn: psycopg.Connection, schema: sql.Identifier, table: sql.Identifier) -> None:
    """Grant the app role row access under a tenant policy (forced on the owner too); the maintainer bypasses."""
    fmt = {"s": schema, "t": table, "app": sql.Identifier(APP_ROLE), "mnt": sql.Identifier(MAINTAINER_ROLE)}
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.{t} TO {app}").format(**fmt))
    conn.execute(sql.SQL("GRANT ALL ON {s}.{t} TO {mnt}").format(**fmt))
    conn.execute(sql.SQL("ALTER TABLE {s}.{t} ENABLE ROW LEVEL SECURITY").format(**fmt))
    conn.execute(sql.SQL("ALTER TABLE {s}.{t} FORCE ROW LEVEL SECURITY").format(**fmt))
    conn.execute(sql.SQL("DROP POLICY IF EXISTS tenant_isolation ON {s}.{t}").format(**fmt))
    conn.execute(sql.SQL("CREATE POLICY tenant_isolation ON {s}.{t} ").format(**fmt) + tenant_policy())


def tenant_policy() -> sql.Composable:
    """The body of every tenant_isolation policy: rows of the transaction's tenant only, read and written."""
    return sql.SQL("USING (tenant_id = current_setting({s}, true))"
                   " WITH CHECK (tenant_id = current_setting({s}, true))").format(s=sql.Literal(TENANT_SETTING))


def _ensure_region(conn: psycopg.Connection, region: str, dim: int, citus: bool, m: int, ef: int) -> None:
    schema = sql.Identifier(region_schema(region))
    fmt = {"s": schema, "region": sql.Literal(region), "dim": sql.Literal(dim),
           "app": sql.Identifier(APP_ROLE), "mnt": sql.Identifier(MAINTAINER_ROLE)}
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {s}").format(**fmt))
    conn.execute(sql.SQL(
        """CREATE TABLE IF NOT EXISTS {s}.memory_events (
             tenant_id text NOT NULL,
             event_id uuid NOT NULL,
             created_at timestamptz NOT NULL,
             region text NOT NULL CHECK (region = {region}),
             agent_name text NOT NULL,
             event_type text NOT NULL,
             text text NOT NULL,
             subject_id text,
             metadata jsonb NOT NULL DEFAULT '{{}}',
             trace_id text,
             source_partition integer,
             source_offset bigint,
             ingested_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (tenant_id, event_id, created_at)
           ) PARTITION BY RANGE (created_at)""").format(**fmt))
    conn.execute(sql.SQL(
        "CREATE INDEX IF NOT EXISTS memory_events_subject ON {s}.memory_events (tenant_id, subject_id)"
        " WHERE subject_id IS NOT NULL").format(**fmt))
    pg_vector_table.ensure_vectors(conn, region_schema(region), region, dim, m=m, ef=ef, policy=tenant_policy())
    if citus:
        qualified = f"{region_schema(region)}.memory_events"
        _citus_once(conn, f"SELECT create_distributed_table('{qualified}', 'tenant_id')", qualified)
        vectors = f"{region_schema(region)}.memory_vectors"
        _citus_once(conn, f"SELECT create_distributed_table('{vectors}', 'tenant_id', colocate_with => "
                          f"'{qualified}')", vectors)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {s} TO {app}, {mnt}").format(**fmt))
    for table in TENANT_TABLES:
        _protect(conn, schema, sql.Identifier(table))


def _citus_once(conn: psycopg.Connection, statement: str, table: str) -> None:
    done = conn.execute(
        "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = %s::regclass", (table,)).fetchone()
    if not done:
        conn.execute(statement)


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def missing_partitions(conn: psycopg.Connection, region: str, days: Iterable[date]) -> list[tuple[str, date]]:
    """(table, day) pairs among `days` whose daily partition does not exist (one catalog query)."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    existing = {row[0] for row in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE n.nspname = %s AND p.relname = ANY(%s)", (region_schema(region), list(DAILY_TABLES)))}
    return [(t, d) for t in DAILY_TABLES for d in wanted if partition_name(t, d) not in existing]


def ensure_partitions(conn: psycopg.Connection, region: str, days: Iterable[date]) -> list[str]:
    """Create the daily partitions of the events table for `days` if missing; returns the names created."""
    schema = region_schema(region)
    missing = missing_partitions(conn, region, days)
    if missing:
        # Serialise creators: two processes creating the same partition would otherwise collide.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('amem.partitions'))")
        missing = missing_partitions(conn, region, {d for _, d in missing})
    created = []
    for table, day in missing:
        name = partition_name(table, day)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {s}.{p} PARTITION OF {s}.{t} FOR VALUES FROM ({lo}) TO ({hi})").format(
                s=sql.Identifier(schema), p=sql.Identifier(name), t=sql.Identifier(table),
                lo=sql.Literal(start), hi=sql.Literal(start + timedelta(days=1))))
        created.append(name)
    return created
