"""deployments/postgres/app-database.sql, run as the admin on a fresh database of the embedded server, lets the
non-superuser login role `amem` run the schema migration and switch to the row-level-security roles."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from resources import pg_schema
from tests.deployments.support import DEPLOYMENTS

pytestmark = pytest.mark.integration
DATABASE = "amem_deployments_test"


def test_documented_setup_lets_the_login_role_migrate(service_env: dict[str, str]):
    socket_dir = parse_qs(urlsplit(service_env["AMEM_PG_DSN"]).query)["host"][0]
    with psycopg.connect(f"postgresql://postgres@/postgres?host={socket_dir}", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    script = (DEPLOYMENTS / "postgres/app-database.sql").read_text()
    for _ in range(2):  # idempotent
        with psycopg.connect(f"postgresql://postgres@/{DATABASE}?host={socket_dir}", autocommit=True) as admin:
            admin.execute(script)
    with psycopg.connect(f"postgresql://amem@/{DATABASE}?host={socket_dir}") as conn:
        assert conn.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False,)
        pg_schema.ensure_schema(conn, ["eu", "us"], 384)
        conn.commit()
        for role in (pg_schema.APP_ROLE, pg_schema.MAINTAINER_ROLE):
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute("SELECT count(*) FROM amem_eu.memory_events")
