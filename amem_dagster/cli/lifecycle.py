"""`amem up | down | status`: the embedded services, plus the topics and Postgres schema the pipeline needs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from amem_dagster.cli import clients
from amem_dagster.cli.output import console, table
from amem_dagster.embedded import broker, milvus, postgres, services
from amem_dagster.embedded.services import ServiceStatus
from amem_dagster.errors import ServiceUnavailable
from amem_dagster.settings import Settings

# How each services.ServiceStatus state reads in the table.
STATE_LABELS = {"running": "running", "started": "started", "stopped": "stopped",
                "external": "external", "down": "down"}
STATE_STYLES = {"started": "green", "running": "green", "stopped": "yellow", "external": "cyan", "down": "dim"}
STOPPERS = {"postgres": postgres.stop, "kafka": broker.stop, "milvus": milvus.stop}


@dataclass(frozen=True)
class UpReport:
    """What `up` found or did: each service, each topic ('created' | 'exists') and the regions with a schema."""

    services: list[ServiceStatus]
    topics: dict[str, str]
    regions: tuple[str, ...]


def bring_up(config: Settings, *, show: bool = True) -> UpReport:
    """Start what is missing, create missing topics and make sure the Postgres schema exists; idempotent.
    With `show`, the service table is printed before the topics and schema are touched."""
    try:
        statuses = services.up(config)
    except RuntimeError as exc:  # an embedded server did not come up; the message names its log
        raise ServiceUnavailable(str(exc)) from None
    if show:
        render(statuses, f"amem services ({config.home})", after_up=True)
    env = clients.addresses(config)
    kafka = clients.kafka(config, env)
    clients.require_kafka(kafka)
    topics = kafka.provision_topics()
    with clients.closing_pools():
        clients.postgres(config, env).pool()
    return UpReport(statuses, topics, config.regions)


def stop_started(config: Settings, names: list[str]) -> list[ServiceStatus]:
    """Stop only the named embedded services (those one invocation started), leaving the others running."""
    return [ServiceStatus(name, "stopped" if STOPPERS[name](config.home) else "down") for name in names]


def render(statuses: list[ServiceStatus], title: str, *, after_up: bool = False) -> None:
    """The service table; after `up`, 'running' reads 'already running' (it was not started by this call)."""
    labels = {**STATE_LABELS, "running": "already running"} if after_up else STATE_LABELS
    rows = [(s.name, Text(labels.get(s.state, s.state), style=STATE_STYLES.get(s.state, "")), s.address)
            for s in statuses]
    console.print(table(title, ("service", "state", "address"), rows))


def up() -> None:
    """Start the embedded Postgres, Kafka broker and Milvus (unless AMEM_* names external ones), then create
    the Kafka topics and the Postgres schema. Running it again reports what is already running."""
    config = clients.settings()
    report = bring_up(config)
    topics = ", ".join(f"{name} {state}" for name, state in report.topics.items())
    console.print(f"topics: {topics}", markup=False)
    console.print(f"postgres schema ready for regions: {', '.join(report.regions)}")


def down() -> None:
    """Stop the embedded services; Postgres and Milvus data stay, the broker's messages (in memory) do not."""
    config = clients.settings()
    render(services.down(config), f"amem services ({config.home})")


def status() -> None:
    """Show which services run and where, without starting anything."""
    config = clients.settings()
    render(services.status(config), f"amem services ({config.home})")
