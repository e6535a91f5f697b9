"""`amem stats`: per tenant, events and vectors in every store, and what the dead-letter queue holds."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import typer

from amem_dagster.cli import clients
from amem_dagster.cli.output import console, print_json, table
from amem_dagster.events import is_valid_tenant_id


@dataclass
class DeadLetters:
    """Distinct dead letters (by their amem-source header), by error code and by the tenant in their key."""

    total: int = 0
    by_error: dict[str, int] = field(default_factory=dict)
    by_tenant: dict[str, int] = field(default_factory=dict)


def dead_letters(kafka, *, timeout: float = 30.0) -> DeadLetters:
    """Read the whole DLQ topic by assignment from offset 0 and count each source message once."""
    from resources.dead_letters import ERROR_HEADER, SOURCE_HEADER, header
    from resources.kafka import read_from

    _, partitions = kafka.describe(kafka.dlq_topic)
    consumer = kafka.consumer()
    try:
        records, _ = read_from(consumer, kafka.dlq_topic, {p: 0 for p in partitions}, max_messages=10**9,
                               deadline=time.monotonic() + timeout)
    finally:
        consumer.close()
    seen: dict[str, tuple[str, str | None]] = {}
    for record in records:
        source = header(record, SOURCE_HEADER) or f"{kafka.dlq_topic}/{record.partition}/{record.offset}"
        key = record.key.decode("utf-8", errors="replace") if record.key else None
        seen[source] = (header(record, ERROR_HEADER) or "unknown", key if is_valid_tenant_id(key) else None)
    by_tenant = Counter(tenant for _, tenant in seen.values() if tenant)
    return DeadLetters(total=len(seen), by_error=dict(Counter(code for code, _ in seen.values())),
                       by_tenant=dict(by_tenant))


def collect() -> dict:
    """The numbers behind `amem stats`, as the JSON it prints."""
    from resources import pg_memory

    config = clients.settings()
    env = clients.addresses(config)
    with clients.closing_pools():
        pg = clients.postgres(config, env)
        with pg.maintenance_transaction() as conn:
            counts = pg_memory.tenant_counts(conn, config.regions)
    milvus = clients.milvus(env)
    dlq = dead_letters(clients.kafka(config, env))
    tenants = []
    for tenant in sorted(counts.keys() | dlq.by_tenant.keys()):
        pg_counts = counts.get(tenant, {"events": 0, "pg_vectors": 0})
        tenants.append({
            "tenant_id": tenant,
            "events": pg_counts["events"],
            "pg_vectors": pg_counts["pg_vectors"],
            "milvus_vectors": sum(milvus.count(tenant, region) for region in config.regions),
            "dlq": dlq.by_tenant.get(tenant, 0),
        })
    return {"tenants": tenants, "dlq": {"total": dlq.total, "by_error": dict(sorted(dlq.by_error.items()))},
            "regions": list(config.regions)}


def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Per tenant: stored events, pgvector rows, Milvus rows and dead letters; then the DLQ by error code."""
    data = collect()
    if as_json:
        print_json(data)
        return
    columns = ("tenant", "events", "pg vectors", "milvus vectors", "dlq")
    rows = [(t["tenant_id"], t["events"], t["pg_vectors"], t["milvus_vectors"], t["dlq"]) for t in data["tenants"]]
    console.print(table(f"memory by tenant (regions {', '.join(data['regions'])})", columns, rows,
                        numeric=columns[1:]))
    errors = data["dlq"]["by_error"]
    console.print(table(f"dead letters: {data['dlq']['total']}", ("error", "messages"), sorted(errors.items()),
                        numeric=("messages",)))
