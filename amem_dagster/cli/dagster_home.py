"""`$AMEM_HOME/dagster/dagster.yaml`: Dagster's run, event and schedule storage on Postgres, queued runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import yaml
from psycopg.conninfo import conninfo_to_dict

from amem_dagster.embedded import postgres
from amem_dagster.errors import ServiceUnavailable, SettingsError
from amem_dagster.settings import Settings

URL_VARIABLE = "AMEM_DAGSTER_PG_URL"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, whose server-side parameters break dagster-postgres'
# `NOTIFY run_events, %(notify_id)s` on every stored event; psycopg2 interpolates client-side and works.
SCHEME = "postgresql+psycopg2"
MAX_CONCURRENT_RUNS = 2
# Dagster's default dequeue pass runs every 5 s; a queued memory run waiting 2.5 s on average for it is a large
# share of how long an event takes to become searchable (bench/freshness.py), and a pass over a short queue is cheap.
DEQUEUE_INTERVAL_SECONDS = 1


def dagster_home(config: Settings) -> Path:
    return config.home / "dagster"


def storage_url(config: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The `dagster` database of the embedded server, or AMEM_DAGSTER_PG_URL / the app DSN when external."""
    env = os.environ if environ is None else environ
    if config.pg_dsn:
        return sqlalchemy_url(env.get(URL_VARIABLE) or config.pg_dsn)
    socket_dir = postgres.running_socket_dir(config.home)
    if socket_dir is None:
        raise ServiceUnavailable("the embedded Postgres is not running; start it with `amem up`")
    # The server listens only on its unix socket: libpq (psycopg2 under SQLAlchemy) takes the directory as
    # the `host` query parameter of a URL with an empty host.
    return sqlalchemy_url(postgres.dsn(socket_dir, postgres.DAGSTER_DATABASE))


def sqlalchemy_url(dsn: str) -> str:
    """A `postgresql+psycopg2://` URL for dagster-postgres (SQLAlchemy), from a libpq URL or a conninfo string."""
    if "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        if scheme not in ("postgres", "postgresql") and not scheme.startswith("postgresql+"):
            raise SettingsError(f"{URL_VARIABLE} / AMEM_PG_DSN is not a Postgres URL (scheme {scheme!r})")
        return f"{SCHEME}://{rest}"
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError with libpq's message
        raise SettingsError(f"AMEM_PG_DSN is not a valid connection string: {exc}") from None
    user = params.pop("user", "") or ""
    password = params.pop("password", "") or ""
    host = params.pop("host", "") or ""
    port = params.pop("port", "") or ""
    dbname = params.pop("dbname", "") or ""
    if host.startswith("/") or "," in host:
        params["host"] = host  # a socket directory (or a host list) goes in the query
        host = ""
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if port and host else "")
    if port and not host:
        params["port"] = port
    query = urlencode(params, quote_via=quote, safe="/")
    return f"{SCHEME}://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def instance_config(url: str, *, url_from_env: bool = False) -> dict:
    """The dagster.yaml content: Postgres storage, queued runs (at most two at a time), threaded daemons."""
    return {
        "storage": {"postgres": {"postgres_url": {"env": URL_VARIABLE} if url_from_env else url}},
        "run_coordinator": {"module": "dagster", "class": "QueuedRunCoordinator",
                            "config": {"max_concurrent_runs": MAX_CONCURRENT_RUNS,
                                       "dequeue_interval_seconds": DEQUEUE_INTERVAL_SECONDS}},
        # Sensor ticks read Kafka by assignment; threads keep one slow tick from delaying the others.
        "sensors": {"use_threads": True, "num_workers": 4},
        "schedules": {"use_threads": True, "num_workers": 2},
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "poll_interval_seconds": 30},
        # The code location imports torch and sentence-transformers; give it time on a cold start.
        "code_servers": {"local_startup_timeout": 180},
        "retention": {"sensor": {"purge_after_days": {"skipped": 1, "failure": 30, "success": 7}},
                      "schedule": {"purge_after_days": 90}},
        "telemetry": {"enabled": False},
    }


def write(config: Settings, environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """Write `$AMEM_HOME/dagster/dagster.yaml` (rewritten every time: the socket path may change); returns
    (DAGSTER_HOME, storage URL). A URL with a password is referenced as ${AMEM_DAGSTER_PG_URL}, not written."""
    url = storage_url(config, environ)
    home = dagster_home(config)
    home.mkdir(parents=True, exist_ok=True)
    has_password = bool(urlsplit(url).password)
    header = "# Written by `amem dev` on every start (amem_dagster/cli/dagster_home.py); edits are overwritten.\n"
    body = yaml.safe_dump(instance_config(url, url_from_env=has_password), sort_keys=False)
    target = home / "dagster.yaml"
    tmp = home / f".dagster.yaml.{os.getpid()}"
    tmp.write_text(header + body)
    if has_password:
        tmp.chmod(0o600)
    tmp.replace(target)
    return home, url
