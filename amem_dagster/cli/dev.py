"""`amem dev`: services up, demo events seeded once, Dagster on Postgres storage, `dagster dev` until Ctrl-C."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from amem_dagster import demo
from amem_dagster.cli import clients, dagster_home, lifecycle, supervise
from amem_dagster.cli.output import console, err_console
from amem_dagster.cli.produce import send
from amem_dagster.embedded import services
from amem_dagster.errors import AmemError, ServiceUnavailable
from amem_dagster.settings import Settings

DEMO_SEED = 7
WORKSPACE = "workspace.yaml"


def repo_root() -> Path:
    """The directory holding workspace.yaml: the current one if it has it, else this checkout's root."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / WORKSPACE).is_file():
            return candidate
    raise AmemError(f"no {WORKSPACE} here or in {Path(__file__).resolve().parents[2]}; run from the repo root")


def topic_has_messages(kafka, topic: str, *, timeout: float = 15.0) -> bool:
    """Whether `topic` holds any message, found by reading one (Tansu's high watermarks are not reliable)."""
    from resources.kafka import read_from

    _, partitions = kafka.describe(topic)
    consumer = kafka.consumer()
    try:
        records, _ = read_from(consumer, topic, {p: 0 for p in partitions}, max_messages=1,
                               deadline=time.monotonic() + timeout)
    finally:
        consumer.close()
    return bool(records)


def seed(config: Settings, env: dict[str, str], *, tenants: int, events: int) -> None:
    """Send the demo events unless memory.events already holds messages (a re-run resumes, never duplicates)."""
    kafka = clients.kafka(config, env)
    if topic_has_messages(kafka, kafka.events_topic):
        console.print(f"{kafka.events_topic} already holds messages: not seeding again", markup=False)
        return
    batch = demo.generate(tenants=tenants, events=events, bad_share=0.05, seed=DEMO_SEED,
                          regions=config.regions, default_region=config.default_region)
    send(kafka, kafka.events_topic, batch.messages)
    console.print(f"seeded {kafka.events_topic}: {batch.good} good events for {len(batch.per_tenant)} tenants "
                  f"and {batch.bad} malformed ones (bound for the DLQ)", markup=False)


def child_env(config: Settings, env: dict[str, str], home: Path, url: str) -> dict[str, str]:
    """This environment plus the service addresses, DAGSTER_HOME and offline model loading."""
    # `dagster dev` warns on every start that `dg dev` supersedes it; this project runs it on purpose.
    warnings = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), "ignore:Function `dev_command`")))
    extra = {**env, "AMEM_HOME": str(config.home), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1",
             "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": warnings}
    if config.pg_dsn:
        extra[dagster_home.URL_VARIABLE] = url
    return {**os.environ, **extra}


def dev(
    tenants: int = typer.Option(3, "--tenants", min=1, max=999, help="Tenants in the demo events."),
    events: int = typer.Option(600, "--events", min=0, help="Demo messages to seed when memory.events is empty."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Dagster UI port (default 3000)."),
) -> None:
    """Start everything for local work: the services (with topics and schema), demo events for TENANTS tenants
    (only into an empty memory.events), Dagster storage on Postgres, then `dagster dev` until Ctrl-C; on exit
    stop only the services this command started."""
    config = clients.settings()
    root = repo_root()
    running_before = {s.name for s in services.status(config) if s.state == "running"}
    outcome = None
    try:
        with supervise.sigterm_as_interrupt():
            lifecycle.bring_up(config)
            env = clients.addresses(config)
            seed(config, env, tenants=tenants, events=events)
            home, url = dagster_home.write(config)
            console.print(f"DAGSTER_HOME={home} (storage: Postgres database of {_where(url)})", markup=False)
        argv = [sys.executable, "-m", "dagster", "dev", "-w", WORKSPACE] + (["--port", str(port)] if port else [])
        outcome = supervise.run(argv, cwd=root, env=child_env(config, env, home, url))
    except KeyboardInterrupt:
        err_console.print("interrupted before dagster dev started", style="yellow")
    finally:
        ours = [s.name for s in services.status(config) if s.state == "running" and s.name not in running_before]
        if ours:
            lifecycle.render(lifecycle.stop_started(config, ours), "stopped what amem dev started")
    if outcome is not None and outcome.returncode != 0 and not outcome.stopped_by_signal:
        raise ServiceUnavailable(f"dagster dev exited with code {outcome.returncode}")


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.path.lstrip('/') or '?'} on {parts.hostname or 'the local socket'}"
