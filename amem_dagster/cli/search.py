"""`amem search`: embed a query and recall a tenant's nearest memories from pgvector or Milvus."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import typer
from psycopg import sql

from amem_dagster.cli import clients
from amem_dagster.cli.output import console, print_json, table
from amem_dagster.events import TENANT_ID_RE, is_valid_tenant_id


class Store(StrEnum):
    pg = "pg"
    milvus = "milvus"


@dataclass(frozen=True)
class Hit:
    """One recalled memory as printed or emitted as JSON."""

    event_id: str
    score: float
    text: str | None
    region: str


def tenant_argument(value: str) -> str:
    """TENANT must be a valid tenant id: a bad one is a usage error (exit 2), not a failed search."""
    if not is_valid_tenant_id(value):
        raise typer.BadParameter(f"{value!r} is not a tenant id (it must match {TENANT_ID_RE.pattern})")
    return value


def search(
    tenant: str = typer.Argument(..., callback=tenant_argument, help="Tenant id, e.g. tenant-001."),
    query: str = typer.Argument(..., help="What to recall, in plain words."),
    k: int = typer.Option(5, "-k", min=1, max=1000, help="How many memories to return."),
    store: Store = typer.Option(Store.pg, "--store", help="Vector store to search."),
    region: str | None = typer.Option(None, "--region", help="Only this region (default: every region)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Find TENANT's memories closest in meaning to QUERY (cosine similarity, best first)."""
    config = clients.settings()
    if region is not None and region not in config.regions:
        raise typer.BadParameter(f"{region!r} is not one of {', '.join(config.regions)}", param_hint="--region")
    if not query.strip():
        raise typer.BadParameter("the query is empty", param_hint="QUERY")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise typer.BadParameter("the query is not valid UTF-8", param_hint="QUERY") from None
    regions = (region,) if region else config.regions
    env = clients.addresses(config)
    vector = clients.embedder().encode([query])[0]
    with clients.closing_pools():
        pg = clients.postgres(config, env)
        if store is Store.pg:
            hits = pg_hits(pg, tenant, regions, vector, k)
        else:
            hits = milvus_hits(pg, clients.milvus(env), tenant, regions, vector, k)
    hits = sorted(hits, key=lambda h: -h.score)[:k]
    if as_json:
        print_json([asdict(h) for h in hits])
        return
    rows = [(f"{h.score:.3f}", h.region, h.text or "(text not found)", h.event_id) for h in hits]
    console.print(table(f"{tenant}: {query}", ("score", "region", "text", "event_id"), rows, numeric=("score",),
                        no_wrap=("score", "region", "event_id")))
    if not hits:
        console.print(f"no memories of {tenant} in {', '.join(regions)} via {store.value}", markup=False)


def pg_hits(pg, tenant: str, regions: tuple[str, ...], vector, k: int) -> list[Hit]:
    """Top k per region from pgvector, inside the tenant's row-level-security transaction."""
    from resources import pg_memory

    hits: list[Hit] = []
    with pg.tenant_transaction(tenant) as conn:
        for region in regions:
            hits += [Hit(h.event_id, h.score, h.text, region)
                     for h in pg_memory.search(conn, tenant, region, vector, k=k)]
    return hits


def milvus_hits(pg, milvus, tenant: str, regions: tuple[str, ...], vector, k: int) -> list[Hit]:
    """Top k per region from Milvus; the texts come from Postgres (Milvus keeps no personal text)."""
    hits: list[Hit] = []
    for region in regions:
        found = milvus.search(tenant, region, vector, k=k, ef=max(64, k))
        texts = event_texts(pg, tenant, region, [h.event_id for h in found])
        hits += [Hit(h.event_id, h.score, texts.get(h.event_id), region) for h in found]
    return hits


def event_texts(pg, tenant: str, region: str, event_ids: list[str]) -> dict[str, str]:
    """event_id → text for the tenant's events in `region` (a router query on Citus)."""
    if not event_ids:
        return {}
    from resources.pg_schema import region_schema

    with pg.tenant_transaction(tenant) as conn:
        rows = conn.execute(sql.SQL(
            "SELECT event_id::text, text FROM {s}.memory_events WHERE tenant_id = %s AND event_id = ANY(%s::uuid[])"
        ).format(s=sql.Identifier(region_schema(region))), (tenant, event_ids)).fetchall()
    return dict(rows)
