"""What the operator commands (purge, forget, backfill, tenants) share: who acts, the Dagster instance, arguments."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
import yaml

from amem_dagster.cli import dagster_home
from amem_dagster.events import TENANT_ID_RE, is_valid_tenant_id
from amem_dagster.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance


def actor() -> str:
    """The OS user running the command: the `actor` of audit records written by the CLI."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid {os.getuid()}"


def tenant_argument(value: str) -> str:
    """A bad tenant id is a usage error (one line, exit 2), caught before any service is touched."""
    if not is_valid_tenant_id(value):
        raise typer.BadParameter(f"{value!r} is not a tenant id (it must match {TENANT_ID_RE.pattern})")
    return value


def region_option(config: Settings, region: str | None) -> tuple[str, ...]:
    """The regions a command covers: the one named with --region (checked), or every configured one."""
    if region is None:
        return config.regions
    if region not in config.regions:
        raise typer.BadParameter(f"{region!r} is not one of {', '.join(config.regions)}", param_hint="--region")
    return (region,)


@contextmanager
def exported(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (EnvVar resources, DAGSTER_HOME), then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_dagster_yaml(config: Settings) -> tuple[str, str]:
    """`$AMEM_HOME/dagster/dagster.yaml` as `amem dev` writes it (same code), written when missing or stale
    (the embedded server's socket path can change between starts). Returns (DAGSTER_HOME, storage URL)."""
    from urllib.parse import urlsplit

    url = dagster_home.storage_url(config)
    home = dagster_home.dagster_home(config)
    target = home / "dagster.yaml"
    wanted = dagster_home.instance_config(url, url_from_env=bool(urlsplit(url).password))
    try:
        current = yaml.safe_load(target.read_text())
    except (OSError, yaml.YAMLError):
        current = None
    if current != wanted:
        home, url = dagster_home.write(config)
    return str(home), url


@contextmanager
def dagster_instance(config: Settings) -> Iterator[DagsterInstance]:
    """`DagsterInstance.get()` with DAGSTER_HOME = $AMEM_HOME/dagster: the instance `amem dev` and Dagit use."""
    from dagster import DagsterInstance

    home, url = ensure_dagster_yaml(config)
    env = {"DAGSTER_HOME": home}
    if config.pg_dsn:  # a URL with a password is referenced from dagster.yaml as ${AMEM_DAGSTER_PG_URL}
        env[dagster_home.URL_VARIABLE] = url
    with exported(env):
        instance = DagsterInstance.get()
        try:
            yield instance
        finally:
            instance.dispose()
