"""Lifecycle SQL: expire daily event partitions and vector rows past a cutoff, erase a subject, ledger and audit."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from amem_dagster.events import MemoryEvent
from resources.pg_schema import DAILY_TABLES, TENANT_TABLES, region_schema

PARTITION_DAY = re.compile(r"_p(\d{8})$")
# Vectors before events: a purge interrupted half-way never leaves a vector without its event.
PURGE_ORDER = ("memory_vectors", "memory_events")
assert set(PURGE_ORDER) == set(TENANT_TABLES)
# Vectors are hash-partitioned by tenant (every partition holds every age), so they expire by row DELETE; the
# events, which hold the personal text, by dropping whole days (DAILY_TABLES).
ROW_EXPIRED = tuple(t for t in PURGE_ORDER if t not in DAILY_TABLES)


def subject_hash(tenant_id: str, subject_id: str) -> str:
    """A tenant-salted SHA-256 of the subject id: the ledger and audit never hold the identifier in clear."""
    return hashlib.sha256(f"{tenant_id}\x00{subject_id}".encode()).hexdigest()


@dataclass(frozen=True)
class Partition:
    """One daily partition of a tenant table."""

    name: str
    day: date


def partitions(conn: psycopg.Connection, region: str, table: str) -> list[Partition]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
        " WHERE n.nspname = %s AND p.relname = %s", (region_schema(region), table)).fetchall()
    found = []
    for (name,) in rows:
        match = PARTITION_DAY.search(name)
        if match:
            found.append(Partition(name, datetime.strptime(match.group(1), "%Y%m%d").date()))
    return sorted(found, key=lambda p: p.day)


def expired_partitions(conn: psycopg.Connection, region: str, table: str, cutoff: datetime) -> list[Partition]:
    """Partitions whose whole day lies before `cutoff` (their upper bound is at or before it)."""
    return [p for p in partitions(conn, region, table)
            if datetime(p.day.year, p.day.month, p.day.day, tzinfo=cutoff.tzinfo) + timedelta(days=1) <= cutoff]


def count_before(conn: psycopg.Connection, region: str, table: str, cutoff: datetime) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {s}.{t} WHERE created_at < %s").format(
        s=sql.Identifier(region_schema(region)), t=sql.Identifier(table)), (cutoff,)).fetchone()[0]


def oldest_before(conn: psycopg.Connection, region: str, table: str, cutoff: datetime) -> datetime | None:
    """The oldest created_at before `cutoff` (a min() over the created_at index), or None."""
    return conn.execute(sql.SQL("SELECT min(created_at) FROM {s}.{t} WHERE created_at < %s").format(
        s=sql.Identifier(region_schema(region)), t=sql.Identifier(table)), (cutoff,)).fetchone()[0]


def drop_partition(conn: psycopg.Connection, region: str, partition: Partition) -> int:
    """Count then drop one partition (physically gone, no row-by-row delete); returns its row count."""
    ident = sql.SQL("{s}.{p}").format(s=sql.Identifier(region_schema(region)), p=sql.Identifier(partition.name))
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
    conn.execute(sql.SQL("DROP TABLE {}").format(ident))
    return rows


def delete_before(conn: psycopg.Connection, region: str, table: str, cutoff: datetime) -> int:
    """Row-delete what is left before `cutoff` (the partial partition the cutoff falls in)."""
    return conn.execute(sql.SQL("DELETE FROM {s}.{t} WHERE created_at < %s").format(
        s=sql.Identifier(region_schema(region)), t=sql.Identifier(table)), (cutoff,)).rowcount


def known_tenants(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT tenant_id FROM amem.tenants ORDER BY tenant_id")]


def register_tenant(conn: psycopg.Connection, tenant_id: str) -> None:
    conn.execute("INSERT INTO amem.tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant_id,))


def without_erased(conn: psycopg.Connection, tenant_id: str,
                   rows: Sequence[tuple[MemoryEvent, int, int]]) -> tuple[list[tuple[MemoryEvent, int, int]], int]:
    """Drop events about a subject erased after the event was created (a replay must not resurrect them)."""
    hashes = {subject_hash(tenant_id, e.subject_id) for e, _, _ in rows if e.subject_id}
    if not hashes:
        return list(rows), 0
    erased = dict(conn.execute(
        "SELECT subject_hash, erased_at FROM amem.erasures WHERE tenant_id = %s AND subject_hash = ANY(%s)",
        (tenant_id, list(hashes))).fetchall())
    if not erased:
        return list(rows), 0
    kept = [r for r in rows if not (r[0].subject_id and (at := erased.get(subject_hash(tenant_id, r[0].subject_id)))
                                    and r[0].created_at <= at)]
    return kept, len(rows) - len(kept)


def erase_subject_rows(conn: psycopg.Connection, tenant_id: str, subject_id: str,
                       regions: Sequence[str]) -> dict[str, int]:
    """Delete the subject's vectors and events in every region (tenant-scoped connection); counts per table."""
    removed = {"pg_vectors": 0, "pg_events": 0}
    for region in regions:
        s = sql.Identifier(region_schema(region))
        removed["pg_vectors"] += conn.execute(sql.SQL(
            "DELETE FROM {s}.memory_vectors WHERE tenant_id = %s AND subject_id = %s").format(s=s),
            (tenant_id, subject_id)).rowcount
        removed["pg_events"] += conn.execute(sql.SQL(
            "DELETE FROM {s}.memory_events WHERE tenant_id = %s AND subject_id = %s").format(s=s),
            (tenant_id, subject_id)).rowcount
    return removed


def count_subject_rows(conn: psycopg.Connection, tenant_id: str, subject_id: str, regions: Sequence[str]) -> int:
    total = 0
    for region in regions:
        s = sql.Identifier(region_schema(region))
        for table in TENANT_TABLES:
            total += conn.execute(sql.SQL("SELECT count(*) FROM {s}.{t} WHERE tenant_id = %s AND subject_id = %s")
                                  .format(s=s, t=sql.Identifier(table)), (tenant_id, subject_id)).fetchone()[0]
    return total


def record_erasure(conn: psycopg.Connection, tenant_id: str, subject_id: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO amem.erasures (tenant_id, subject_hash, erased_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, subject_hash) DO UPDATE SET erased_at = EXCLUDED.erased_at",
        (tenant_id, subject_hash(tenant_id, subject_id), at))


def audit(conn: psycopg.Connection, *, actor: str, action: str, details: dict, region: str | None = None,
          tenant_id: str | None = None, subject_id: str | None = None) -> None:
    """Append one audit record; the subject appears only as its salted hash."""
    conn.execute(
        "INSERT INTO amem.audit_log (actor, action, region, tenant_id, subject_hash, details)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, action, region, tenant_id,
         subject_hash(tenant_id, subject_id) if tenant_id and subject_id else None, Jsonb(details)))
