"""Session fixtures: one set of real embedded services (Postgres+pgvector, Tansu, Milvus Lite) for the suite."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amem_dagster.embedded import services
from amem_dagster.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def amem_home() -> Iterator[Path]:
    # Short path under /tmp: Postgres' unix socket path must stay under ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="amem-test-", dir="/tmp") as home:
        yield Path(home)


@pytest.fixture(scope="session")
def service_env(amem_home: Path) -> Iterator[dict[str, str]]:
    """Start the embedded services once and export their addresses as AMEM_* variables."""
    settings = Settings.from_env({"AMEM_HOME": str(amem_home)})
    services.up(settings)
    env = {"AMEM_HOME": str(amem_home), **services.connection_env(settings)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        services.down(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env(service_env)


@pytest.fixture(scope="session")
def dagster_instance(service_env: dict[str, str], amem_home: Path) -> Iterator:
    """A real DagsterInstance whose run, event-log and schedule storage is the embedded Postgres."""
    from dagster import DagsterInstance

    dagster_home = amem_home / "dagster-test"
    dagster_home.mkdir(exist_ok=True)
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose server-side binding breaks dagster-postgres NOTIFY.
    url = service_env["AMEM_PG_DSN"].replace("/amem?", "/dagster?").replace("postgresql://", "postgresql+psycopg2://")
    (dagster_home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: \"{url}\"\n"
        "telemetry:\n  enabled: false\n"
    )
    instance = DagsterInstance.from_config(str(dagster_home))
    try:
        yield instance
    finally:
        instance.dispose()
