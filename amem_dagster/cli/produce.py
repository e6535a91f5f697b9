"""`amem produce`: send demo memory events (with a share of malformed ones) to Kafka behind a progress bar."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from amem_dagster import demo
from amem_dagster.cli import clients
from amem_dagster.cli.output import console, err_console, table
from amem_dagster.errors import ServiceUnavailable
from amem_dagster.events import is_valid_tenant_id
from amem_dagster.settings import Settings


def send(kafka, topic: str, messages: Sequence[demo.Message], on_delivered: Callable[[int], None] | None = None,
         *, timeout: float = 60.0) -> int:
    """Send every message with the idempotent producer and wait until all are acknowledged; returns the count."""
    from resources.kafka import deliver_all

    producer = kafka.producer()
    failures: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            failures.append(err.str())
        elif on_delivered:
            on_delivered(1)

    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    deliver_all(producer, timeout)
    if failures:
        raise ServiceUnavailable(f"{len(failures)} message(s) were not delivered to {topic}: {failures[0]}")
    return len(messages)


def pick_regions(config: Settings, raw: str | None) -> tuple[str, ...]:
    """The --regions subset (comma-separated) of the configured regions; all of them when not given."""
    if not raw:
        return config.regions
    chosen = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [r for r in chosen if r not in config.regions]
    if not chosen or unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown) or 'nothing'} is not among the configured regions ({', '.join(config.regions)})",
            param_hint="--regions")
    return chosen


def check_prefix(value: str) -> str:
    """--tenant-prefix must yield valid tenant ids (PREFIX-001 ...)."""
    if not is_valid_tenant_id(f"{value}-001") or len(value) > 58:
        raise typer.BadParameter(f"{value!r} does not make tenant ids like {value}-001 valid "
                                 "(lowercase letters, digits, '-' or '_', at most 58 characters)")
    return value


def produce(
    tenants: int = typer.Option(3, "--tenants", min=1, max=999, help="How many tenants (tenant-001, ...)."),
    events: int = typer.Option(300, "--events", min=0, help="How many messages in all, bad ones included."),
    bad_share: float = typer.Option(0.05, "--bad-share", min=0.0, max=1.0,
                                    help="Fraction of malformed messages (every rejection kind in turn)."),
    skew: float = typer.Option(0.0, "--skew", min=0.0, help="Zipf exponent of tenant sizes; 0 = equal sizes."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed; the same seed sends the same events."),
    regions: str | None = typer.Option(None, "--regions", help="Comma-separated subset of AMEM_REGIONS."),
    tenant_prefix: str = typer.Option("tenant", "--tenant-prefix", callback=check_prefix,
                                      help="Tenant ids are PREFIX-001, PREFIX-002, ..."),
) -> None:
    """Send demo agent memories to memory.events: varied texts on a few topics for TENANTS tenants, with a
    --bad-share of messages that break the contract (they must end up in the DLQ)."""
    config = clients.settings()
    chosen = pick_regions(config, regions)
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    batch = demo.generate(tenants=tenants, events=events, bad_share=bad_share, skew=skew, seed=seed,
                          regions=chosen, default_region=config.default_region, tenant_prefix=tenant_prefix)
    kafka = clients.kafka(config, clients.addresses(config))
    kafka.describe(kafka.events_topic)  # fails fast, in one line, when the broker or topic is missing
    started = time.monotonic()
    with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console) as progress:
        task = progress.add_task("produce", total=len(batch.messages))
        send(kafka, kafka.events_topic, batch.messages, lambda n: progress.advance(task, n))
    elapsed = time.monotonic() - started
    summary(batch, kafka.events_topic, seed, elapsed)


def summary(batch: demo.DemoBatch, topic: str, seed: int, elapsed: float) -> None:
    """Per-tenant good events, then the bad ones by kind, then one line of totals."""
    console.print(table(None, ("tenant", "good events"), sorted(batch.per_tenant.items()), numeric=("good events",)))
    if batch.bad:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(batch.bad_kinds.items()))
        console.print(f"bad messages: {kinds}", markup=False)
    rate = len(batch.messages) / elapsed if elapsed > 0 else 0.0
    console.print(f"sent {len(batch.messages)} messages to {topic} ({batch.good} good, {batch.bad} bad) "
                  f"in {elapsed:.2f}s, {rate:.0f}/s, seed {seed}", markup=False)
