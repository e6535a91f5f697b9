"""Row-level security on every tenant table in every region, against the real server.

A transaction scoped to tenant A (SET LOCAL ROLE amem_app + amem.tenant_id = A) cannot read, update or delete
tenant B's rows even when the query names B, cannot write rows as B or move its own rows to B; the app role with
no tenant set sees and changes nothing; the scope ends with the transaction, so a pooled connection carries
nothing over. The maintainer role (BYPASSRLS) sees both, which shows the rows were there to be found.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from amem_dagster.events import MemoryEvent
from resources import pg_lifecycle, pg_memory
from resources.pg_schema import APP_ROLE, TENANT_SETTING, region_schema
from resources.pg_vector_table import VECTOR_PARTITIONS, vector_partition_name
from resources.postgres import PostgresResource
from resources.records import VectorRow

pytestmark = pytest.mark.integration
REGIONS = ("eu", "us")
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Table:
    """A tenant table: where it is, how to add a row for a tenant, and a column an UPDATE may change."""

    schema: str
    name: str
    column: str
    value: object

    @property
    def ident(self) -> sql.Composable:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


TABLES = [
    *(Table(region_schema(r), "memory_events", "text", "overwritten") for r in REGIONS),
    *(Table(region_schema(r), "memory_vectors", "model", "overwritten") for r in REGIONS),
    Table("amem", "tenant_stats", "events", 0),
    Table("amem", "erasures", "subject_hash", "overwritten"),
]


@pytest.fixture(scope="module")
def pg(service_env) -> PostgresResource:
    return PostgresResource(dsn=service_env["AMEM_PG_DSN"], regions=",".join(REGIONS))


def _insert(conn: psycopg.Connection, table: Table, tenant: str) -> None:
    """One row of `tenant` in `table`, written through the tenant's own scoped transaction."""
    if table.name == "memory_events":
        region = table.schema.removeprefix("amem_")
        pg_memory.insert_events(conn, [(MemoryEvent(str(uuid.uuid4()), tenant, "a", "Obs", f"{tenant} secret",
                                                     region, NOW), 0, 0)])
    elif table.name == "memory_vectors":
        region = table.schema.removeprefix("amem_")
        pg_memory.upsert_vectors(conn, [VectorRow(tenant, str(uuid.uuid4()), region, NOW, None, "m",
                                                  np.ones(384, dtype=np.float32))])
    elif table.name == "tenant_stats":
        conn.execute("INSERT INTO amem.tenant_stats (tenant_id, events, pg_vectors, milvus_vectors, subjects,"
                     " event_types) VALUES (%s, 1, 1, 1, 0, %s)", (tenant, Jsonb({})))
    else:
        conn.execute("INSERT INTO amem.erasures (tenant_id, subject_hash, erased_at) VALUES (%s, %s, now())",
                     (tenant, uuid.uuid4().hex))


@pytest.fixture(scope="module")
def two_tenants(pg) -> tuple[str, str]:
    """Tenants A and B, each with one row in every tenant table of every region."""
    a, b = (f"iso-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for region in REGIONS:
        pg.ensure_partitions(region, [NOW.date()])
    for tenant in (a, b):
        with pg.tenant_transaction(tenant) as conn:
            pg_lifecycle.register_tenant(conn, tenant)
            for table in TABLES:
                _insert(conn, table, tenant)
    return a, b


def _count(conn: psycopg.Connection, table: Table, *tenants: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = ANY(%s)").format(table.ident),
                        (list(tenants),)).fetchone()[0]


@pytest.mark.parametrize("table", TABLES, ids=str)
def test_scoped_to_a_the_rows_of_b_cannot_be_read_updated_or_deleted(pg, two_tenants, table):
    a, b = two_tenants
    with pg.maintenance_transaction() as conn:
        assert _count(conn, table, a) == 1 and _count(conn, table, b) == 1
    with pg.tenant_transaction(a) as conn:
        assert _count(conn, table, b) == 0
        assert conn.execute(sql.SQL("SELECT * FROM {} WHERE tenant_id = %s OR true").format(table.ident),
                            (b,)).fetchall() != []  # A's own rows only ...
        assert {r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(table.ident))} == {a}
        assert conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE tenant_id = %s").format(
            table.ident, sql.Identifier(table.column)), (table.value, b)).rowcount == 0
        assert conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(table.ident), (b,)).rowcount == 0
        assert conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id <> %s").format(table.ident), (a,)).rowcount == 0
    with pg.tenant_transaction(b) as conn:
        assert _count(conn, table, b) == 1
        if table.column != "events":
            changed = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s AND {}::text = %s").format(
                table.ident, sql.Identifier(table.column)), (b, str(table.value))).fetchone()[0]
            assert changed == 0


@pytest.mark.parametrize("table", TABLES, ids=str)
def test_scoped_to_a_no_row_can_be_written_as_b_or_moved_to_b(pg, two_tenants, table):
    a, b = two_tenants
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), \
            pg.tenant_transaction(a) as conn:
        _insert(conn, table, b)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), \
            pg.tenant_transaction(a) as conn:
        conn.execute(sql.SQL("UPDATE {} SET tenant_id = %s WHERE tenant_id = %s").format(table.ident), (b, a))
    with pg.maintenance_transaction() as conn:
        assert _count(conn, table, a) == 1 and _count(conn, table, b) == 1


@pytest.mark.parametrize("scope", [None, "", "' OR 1=1 --"], ids=["unset", "empty", "injection"])
@pytest.mark.parametrize("table", TABLES, ids=str)
def test_the_app_role_without_a_valid_tenant_sees_and_changes_nothing(pg, two_tenants, table, scope):
    a, b = two_tenants
    with pg.pool().connection() as conn, conn.transaction():
        conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
        if scope is not None:
            conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, scope))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()[0] == 0
        assert conn.execute(sql.SQL("UPDATE {} SET {} = %s").format(
            table.ident, sql.Identifier(table.column)), (table.value,)).rowcount == 0
        assert conn.execute(sql.SQL("DELETE FROM {}").format(table.ident)).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            _insert(conn, table, a)
    with pg.maintenance_transaction() as conn:
        assert _count(conn, table, a, b) == 2


def _partitions(region: str) -> list[str]:
    """Today's events partition and every hash partition of the vectors."""
    return [f"memory_events_p{NOW:%Y%m%d}",
            *(vector_partition_name(r) for r in range(VECTOR_PARTITIONS))]


@pytest.mark.parametrize("region", REGIONS)
def test_the_app_role_cannot_bypass_policies_through_a_partition(pg, two_tenants, region):
    for partition in _partitions(region):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), pg.tenant_transaction(two_tenants[0]) as conn:
            conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(region_schema(region)), sql.Identifier(partition)))


@pytest.mark.parametrize("region", REGIONS)
def test_vector_partitions_force_the_tenant_policy_even_if_granted(pg, two_tenants, region):
    a, b = two_tenants
    schema = region_schema(region)
    with pg.maintenance_transaction() as conn:
        flags = conn.execute(
            "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity, count(p.polname) FROM pg_class c"
            " LEFT JOIN pg_policy p ON p.polrelid = c.oid WHERE c.relnamespace = %s::regnamespace"
            " AND c.relkind = 'r' AND c.relname LIKE 'memory\\_vectors\\_h%%' GROUP BY 1, 2", (schema,)).fetchall()
    assert sorted(flags) == [(vector_partition_name(r), True, 1) for r in range(VECTOR_PARTITIONS)]
    # A stray grant on a partition still shows a scoped app role only its own tenant's rows.
    with pg.owner_transaction() as conn:
        for partition in _partitions(region)[1:]:
            conn.execute(sql.SQL("GRANT SELECT ON {}.{} TO {}").format(
                sql.Identifier(schema), sql.Identifier(partition), sql.Identifier(APP_ROLE)))
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, a))
            seen = {row[0] for partition in _partitions(region)[1:] for row in conn.execute(
                sql.SQL("SELECT tenant_id FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(partition)))}
        conn.execute("RESET ROLE")
        for partition in _partitions(region)[1:]:
            conn.execute(sql.SQL("REVOKE SELECT ON {}.{} FROM {}").format(
                sql.Identifier(schema), sql.Identifier(partition), sql.Identifier(APP_ROLE)))
    assert seen == {a}


def test_the_scope_ends_with_the_transaction_on_a_reused_connection(service_env, two_tenants):
    a, b = two_tenants
    with psycopg.connect(service_env["AMEM_PG_DSN"]) as conn:
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, a))
            assert _count(conn, TABLES[0], a) == 1
        # Same session, next transaction: neither the role nor the tenant survived the commit.
        assert conn.execute("SELECT current_user <> %s", (APP_ROLE,)).fetchone()[0]
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            assert conn.execute("SELECT coalesce(current_setting(%s, true), '')", (TENANT_SETTING,)).fetchone()[0] == ""
            assert _count(conn, TABLES[0], a, b) == 0


def test_the_app_role_cannot_read_the_audit_log(pg, two_tenants):
    with pytest.raises(psycopg.errors.InsufficientPrivilege), pg.tenant_transaction(two_tenants[0]) as conn:
        conn.execute("SELECT count(*) FROM amem.audit_log").fetchone()


def test_app_and_maintainer_roles_are_not_superusers_and_only_the_maintainer_bypasses_rls(pg):
    with pg.maintenance_transaction() as conn:
        roles = {name: (superuser, bypass) for name, superuser, bypass in conn.execute(
            "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s)",
            (["amem_app", "amem_maintainer"],))}
        forced = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relrowsecurity AND c.relforcerowsecurity AND c.relkind IN ('r', 'p')"
            " AND n.nspname = ANY(%s)", (["amem", *(region_schema(r) for r in REGIONS)],)).fetchall()
    assert roles == {"amem_app": (False, False), "amem_maintainer": (False, True)}
    assert {str(t) for t in TABLES} <= {row[0] for row in forced}


def test_a_tenant_cannot_list_the_other_tenants(pg, two_tenants):
    a, b = two_tenants
    with pg.tenant_transaction(a) as conn:
        assert conn.execute("SELECT count(*) FROM amem.tenants WHERE tenant_id = %s", (b,)).fetchone()[0] == 0
