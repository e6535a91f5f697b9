"""`amem purge | forget | backfill | tenants` against the session's real services and Dagster instance."""

from __future__ import annotations

import getpass
import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

from amem_dagster.cli.app import app
from amem_dagster.events import MemoryEvent
from assets.memory_writes import store_events
from resources import pg_lifecycle, pg_memory
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from resources.records import VectorRow

runner = CliRunner()
DAY = timedelta(days=1)


def amem(env: dict[str, str], *args: str):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def env(service_env, dagster_instance) -> dict[str, str]:
    """The session services, and Dagster storage shared with the `dagster_instance` fixture (its database)."""
    url = service_env["AMEM_PG_DSN"].replace("/amem?", "/dagster?").replace("postgresql://", "postgresql+psycopg2://")
    env = {**service_env, "AMEM_DAGSTER_PG_URL": url}
    assert amem(env, "up").exit_code == 0
    return env


@pytest.fixture(scope="module")
def stores(env):
    return PostgresResource(dsn=env["AMEM_PG_DSN"]), MilvusResource(uri=env["AMEM_MILVUS_URI"])


def _load(stores, tenant, spec, *, vectors=True):
    """spec: (region, age, subject) triples; stored events and, optionally, random vectors in both stores."""
    postgres, milvus = stores
    now = datetime.now(UTC)
    events = [MemoryEvent(event_id=str(uuid.uuid4()), tenant_id=tenant, agent_name="a", event_type="Observation",
                          text=f"memory {i} of {tenant}", region=region, created_at=now - age, subject_id=subject)
              for i, (region, age, subject) in enumerate(spec)]
    store_events(postgres, {tenant: [(e, 0, i) for i, e in enumerate(events)]})
    if vectors:
        rng = np.random.default_rng(9)
        rows = [VectorRow(tenant, e.event_id, e.region, e.created_at, e.subject_id, "m",
                          rng.normal(size=384).astype(np.float32)) for e in events]
        milvus.upsert(rows)
        with postgres.tenant_transaction(tenant) as conn:
            pg_memory.upsert_vectors(conn, rows)
    return events


def _held(stores, tenant):
    postgres, milvus = stores
    figures = []
    with postgres.tenant_transaction(tenant) as conn:
        for region in ("eu", "us"):
            figures.append((*pg_memory.count_tenant(conn, tenant, region), milvus.count(tenant, region)))
    return figures


def _partitions(stores) -> dict[str, list[str]]:
    postgres, _ = stores
    with postgres.maintenance_transaction() as conn:
        return {r: [p.name for t in pg_lifecycle.PURGE_ORDER for p in pg_lifecycle.partitions(conn, r, t)]
                for r in ("eu", "us")}


def _audits(stores) -> int:
    with stores[0].maintenance_transaction() as conn:
        return conn.execute("SELECT count(*) FROM amem.audit_log").fetchone()[0]


def test_purge_dry_run_json_reports_and_changes_nothing(env, stores):
    tenant = f"cp-{uuid.uuid4().hex[:8]}"
    _load(stores, tenant, [("eu", 200 * DAY, None), ("eu", 100 * DAY, "s1"), ("eu", 10 * DAY, None),
                           ("us", 400 * DAY, None), ("us", 100 * DAY, None)])
    before = (_held(stores, tenant), _partitions(stores), _audits(stores))

    result = amem(env, "purge", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    reports = {r["region"]: r for r in json.loads(result.stdout)}
    assert set(reports) == {"eu", "us"}
    assert (reports["eu"]["retention_days"], reports["us"]["retention_days"]) == (90, 365)
    for region, expired in (("eu", 2), ("us", 1)):
        report = reports[region]
        assert report["dry_run"] is True and report["rows_deleted"] is None
        assert all(report["removed"][store] >= expired for store in ("pg_events", "pg_vectors", "milvus_vectors"))
        assert report["partitions_dropped"], "the partitions a real purge would drop are listed"
        cutoff = datetime.fromisoformat(report["cutoff"])
        assert abs(cutoff - (datetime.now(UTC) - report["retention_days"] * DAY)) < timedelta(minutes=5)
    assert (_held(stores, tenant), _partitions(stores), _audits(stores)) == before, "a dry run changes nothing"

    table = amem(env, "purge", "--dry-run", "--region", "us")
    assert table.exit_code == 0 and "would be removed" in table.stdout and "365d" in table.stdout
    only_us = amem(env, "purge", "--dry-run", "--region", "us", "--json")
    assert [r["region"] for r in json.loads(only_us.stdout)] == ["us"]
    assert _held(stores, tenant) == before[0]


def test_purge_removes_what_the_window_expired_and_audits_the_os_user(env, stores):
    tenant = f"cq-{uuid.uuid4().hex[:8]}"
    _load(stores, tenant, [("us", 400 * DAY, None), ("us", 380 * DAY, None), ("us", 30 * DAY, None)])
    result = amem(env, "purge", "--region", "us", "--json")
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)
    assert report["region"] == "us" and report["dry_run"] is False
    assert all(report["removed"][store] >= 2 for store in ("pg_events", "pg_vectors", "milvus_vectors"))
    assert _held(stores, tenant)[1] == (1, 1, 1)
    with stores[0].maintenance_transaction() as conn:
        actor = conn.execute("SELECT actor FROM amem.audit_log WHERE action = 'retention_purge' AND region = 'us'"
                             " ORDER BY audit_id DESC LIMIT 1").fetchone()[0]
    assert actor == getpass.getuser()


@pytest.mark.parametrize("args", [("purge", "--region", "mars"), ("forget", "Bad Tenant", "subject-1"),
                                  ("forget", "no-such-tenant-4f1c", "subject-1"), ("forget", "ok-tenant", " "),
                                  ("forget", "ok-tenant", "alice\udcff"),
                                  ("tenants", "remove", "Bad Tenant"), ("tenants", "remove", "no-such-tenant-4f1c"),
                                  ("backfill",), ("backfill", "--all", "some-tenant"),
                                  ("backfill", "no-such-tenant-4f1c")])
def test_bad_input_is_one_line_and_exit_2(env, args):
    result = amem(env, *args)
    assert result.exit_code == 2, result.output
    one_error_line(result)


def test_tenants_remove_refuses_data_then_accepts_once_erased(env, stores, dagster_instance):
    postgres, _ = stores
    tenant = f"ct-{uuid.uuid4().hex[:8]}"
    _load(stores, tenant, [("eu", DAY, "carol"), ("us", 2 * DAY, "carol")])
    dagster_instance.add_dynamic_partitions("tenants", [tenant])

    refused = amem(env, "tenants", "remove", tenant)
    assert refused.exit_code == 1
    assert "still holds 2 events, 2 pg vectors, 2 milvus vectors" in one_error_line(refused)
    assert dagster_instance.has_dynamic_partition("tenants", tenant)

    listed = {t["tenant_id"]: t for t in json.loads(amem(env, "tenants", "list", "--json").stdout)}
    assert listed[tenant] | {"first_seen": None} == {
        "tenant_id": tenant, "events": 2, "pg_vectors": 2, "milvus_vectors": 2, "first_seen": None,
        "registered": True, "partition": True, "empty": False}

    forgot = amem(env, "forget", tenant, "carol", "--json")
    assert forgot.exit_code == 0, forgot.output
    assert json.loads(forgot.stdout)["removed"] == {"pg_vectors": 2, "pg_events": 2, "milvus_vectors": 2}
    assert "carol" not in forgot.stdout
    with postgres.maintenance_transaction() as conn:
        actor = conn.execute("SELECT actor FROM amem.audit_log WHERE action = 'erasure' AND tenant_id = %s",
                             (tenant,)).fetchone()[0]
    assert actor == getpass.getuser()

    listed = {t["tenant_id"]: t for t in json.loads(amem(env, "tenants", "list", "--json").stdout)}
    assert listed[tenant]["empty"] is True

    removed = amem(env, "tenants", "remove", tenant, "--json")
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout)["removed_from"] == ["amem.tenants", "tenants partitions"]
    assert not dagster_instance.has_dynamic_partition("tenants", tenant)
    with postgres.maintenance_transaction() as conn:
        assert conn.execute("SELECT 1 FROM amem.tenants WHERE tenant_id = %s", (tenant,)).fetchone() is None
        assert conn.execute("SELECT 1 FROM amem.erasures WHERE tenant_id = %s", (tenant,)).fetchone(), \
            "the erasure ledger stays, so a replay still cannot resurrect the subject"
        audit = conn.execute("SELECT actor FROM amem.audit_log WHERE action = 'tenant_removed' AND tenant_id = %s",
                             (tenant,)).fetchone()
    assert audit == (getpass.getuser(),)
    assert tenant not in {t["tenant_id"] for t in json.loads(amem(env, "tenants", "list", "--json").stdout)}


def test_backfill_cli_embeds_named_tenants_in_the_dagster_instance(env, stores, dagster_instance):
    tenant = f"cb-{uuid.uuid4().hex[:8]}"
    _load(stores, tenant, [("eu", DAY, None), ("us", DAY, None)], vectors=False)
    dagster_instance.add_dynamic_partitions("tenants", [tenant])

    result = amem(env, "backfill", tenant, "--json")
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.stdout)
    assert run["tenants"] == [tenant] and run["success"] and run["events_embedded"] == 2
    assert dagster_instance.get_run_by_id(run["run_id"]).tags["dagster/asset_partition_range_start"] == tenant
    assert _held(stores, tenant) == [(1, 1, 1), (1, 1, 1)]
