"""`amem tenants list | remove`: dynamic-partition hygiene; a tenant is removed only by this explicit command."""

from __future__ import annotations

import typer

from amem_dagster.cli import clients, operator
from amem_dagster.cli.output import console, print_json, table
from amem_dagster.errors import AmemError

app = typer.Typer(help="The tenants Postgres and the Dagster instance know, and their removal once empty.",
                  no_args_is_help=True)

PARTITIONS = "tenants"


class TenantNotEmpty(AmemError):
    """The tenant still holds memories somewhere: erase or let them expire first."""


def tenant_figures(pg, milvus, tenant: str, regions: tuple[str, ...], conn=None) -> dict[str, int]:
    """events / pg_vectors / milvus_vectors of one tenant over every region."""
    from resources import pg_memory

    figures = {"events": 0, "pg_vectors": 0, "milvus_vectors": 0}

    def count(c) -> None:
        for region in regions:
            events, vectors = pg_memory.count_tenant(c, tenant, region)
            figures["events"] += events
            figures["pg_vectors"] += vectors

    if conn is None:
        with pg.maintenance_transaction() as c:
            count(c)
    else:
        count(conn)
    figures["milvus_vectors"] = sum(milvus.count(tenant, region) for region in regions)
    return figures


def collect() -> list[dict]:
    """Every tenant of amem.tenants or of the `tenants` partitions, with what it holds in each store."""
    from resources import pg_memory

    config = clients.settings()
    env = clients.addresses(config)
    milvus = clients.milvus(env)
    with operator.dagster_instance(config) as instance, clients.closing_pools():
        partitions = set(instance.get_dynamic_partitions(PARTITIONS))
        pg = clients.postgres(config, env)
        with pg.maintenance_transaction() as conn:
            first_seen = dict(conn.execute("SELECT tenant_id, first_seen FROM amem.tenants").fetchall())
            counts = pg_memory.tenant_counts(conn, config.regions)
    rows = []
    for tenant in sorted(first_seen.keys() | partitions | counts.keys()):
        pg_counts = counts.get(tenant, {"events": 0, "pg_vectors": 0})
        figures = {**pg_counts, "milvus_vectors": sum(milvus.count(tenant, r) for r in config.regions)}
        rows.append({"tenant_id": tenant, **figures,
                     "first_seen": first_seen[tenant].isoformat() if tenant in first_seen else None,
                     "registered": tenant in first_seen, "partition": tenant in partitions,
                     "empty": not any(figures.values())})
    return rows


def list_tenants(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every known tenant: rows and vectors per store, first seen, whether it is a `tenants` partition, and
    whether it is empty (so `amem tenants remove` would accept it)."""
    rows = collect()
    if as_json:
        print_json(rows)
        return
    columns = ("tenant", "events", "pg vectors", "milvus", "first seen", "partition", "empty")
    console.print(table(f"tenants: {len(rows)} (empty ones can be removed with `amem tenants remove`)", columns, [
        (r["tenant_id"], r["events"], r["pg_vectors"], r["milvus_vectors"], (r["first_seen"] or "-")[:10],
         "yes" if r["partition"] else "no", "yes" if r["empty"] else "no") for r in rows],
        numeric=columns[1:4], no_wrap=("first seen",)))


def remove(
    tenant: str = typer.Argument(..., callback=operator.tenant_argument, help="Tenant id to remove."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a sentence."),
) -> None:
    """Remove TENANT from the `tenants` dynamic partitions and from amem.tenants, only if it holds no events and
    no vectors in any region of Postgres or Milvus (everything erased or expired). The erasure ledger and the
    audit trail stay; an audit record names the OS user. New events for the tenant would register it again."""
    from resources import pg_lifecycle

    config = clients.settings()
    env = clients.addresses(config)
    milvus = clients.milvus(env)
    with operator.dagster_instance(config) as instance, clients.closing_pools():
        is_partition = instance.has_dynamic_partition(PARTITIONS, tenant)
        pg = clients.postgres(config, env)
        with pg.maintenance_transaction() as conn:
            # Waits for ingestion transactions that registered tenants (and inserted events) to commit, and
            # holds new registrations until this one ends: nothing can slip in between the count and the delete.
            conn.execute("LOCK TABLE amem.tenants IN SHARE ROW EXCLUSIVE MODE")
            registered = conn.execute("SELECT 1 FROM amem.tenants WHERE tenant_id = %s",
                                      (tenant,)).fetchone() is not None
            if not registered and not is_partition:
                raise typer.BadParameter(f"tenant {tenant!r} is neither in amem.tenants nor a partition of "
                                         f"`{PARTITIONS}`", param_hint="TENANT")
            figures = tenant_figures(pg, milvus, tenant, config.regions, conn=conn)
            if any(figures.values()):
                held = ", ".join(f"{n} {store.replace('_', ' ')}" for store, n in figures.items() if n)
                raise TenantNotEmpty(f"tenant {tenant} still holds {held}: erase its subjects (amem forget) or "
                                     f"let them expire (amem purge) before removing it")
            conn.execute("DELETE FROM amem.tenants WHERE tenant_id = %s", (tenant,))
            conn.execute("DELETE FROM amem.tenant_stats WHERE tenant_id = %s", (tenant,))
            pg_lifecycle.audit(conn, actor=operator.actor(), action="tenant_removed", tenant_id=tenant,
                               details={"registered": registered, "partition": is_partition,
                                        "regions": list(config.regions)})
        if is_partition:
            instance.delete_dynamic_partition(PARTITIONS, tenant)
    outcome = {"tenant_id": tenant, "removed_from": [name for name, done in
                                                     (("amem.tenants", registered), (f"{PARTITIONS} partitions",
                                                                                     is_partition)) if done]}
    if as_json:
        print_json(outcome)
        return
    console.print(f"removed tenant {tenant} from {' and '.join(outcome['removed_from'])}; it held no memories "
                  "in any store", markup=False)


app.command("list")(list_tenants)
app.command("remove")(remove)
