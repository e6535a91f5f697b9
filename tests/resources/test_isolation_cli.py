"""`amem search` under fuzzing, against the session's real services: hostile tenant ids are a one-line usage
error (exit 2, never a traceback); hostile queries for a real tenant return that tenant's memories only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from amem_dagster.cli.app import app
from amem_dagster.events import TENANT_ID_RE, MemoryEvent
from assets.memory_writes import embed_and_write, store_events
from resources import pg_memory
from resources.embedder import EmbedderResource
from resources.kafka import KafkaResource
from resources.milvus import MilvusResource
from resources.postgres import PostgresResource
from tests.resources.test_isolation_milvus import INJECTIONS

pytestmark = pytest.mark.integration
EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
runner = CliRunner()

hostile = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(st.characters(codec="utf-8"), max_size=60),
    st.text(st.characters(codec="utf-8", categories=("Cc", "Po", "Ps", "Pe", "Sm", "Zs", "Zl")), max_size=20),
    st.builds(lambda a, b: a + b, st.sampled_from(INJECTIONS), st.text(st.characters(codec="utf-8"), max_size=8)),
)
bad_tenants = st.one_of(hostile, st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3)).filter(
    lambda t: TENANT_ID_RE.fullmatch(t) is None)


@pytest.fixture(scope="module")
def owner(service_env):
    """Tenant A with a few embedded memories in eu and us, and tenant B with its own (never to be returned)."""
    pg = PostgresResource(dsn=service_env["AMEM_PG_DSN"])
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"])
    kafka = KafkaResource(bootstrap_servers=service_env["AMEM_KAFKA_BOOTSTRAP"])
    kafka.provision_topics()
    a, b = (f"cliiso-{uuid.uuid4().hex[:8]}" for _ in range(2))
    now = datetime.now(UTC)
    texts = ["the weather in Lisbon", "a recipe for bread", '" or tenant_id != "', "Robert'); DROP TABLE x;--"]
    by_tenant = {t: [(MemoryEvent(str(uuid.uuid4()), t, "a", "Obs", f"{t} {text}", ("eu", "us")[i % 2], now), 0, i)
                     for i, text in enumerate(texts)] for t in (a, b)}
    store_events(pg, by_tenant)
    todo = []
    for tenant in (a, b):
        with pg.tenant_transaction(tenant) as conn:
            todo += [(tenant, e) for r in ("eu", "us") for e in pg_memory.pending_embeddings(conn, tenant, r, "m")]
    embed_and_write(todo, embedder=EmbedderResource(), milvus=milvus, postgres=pg, kafka=kafka)
    own = {e.event_id for e, _, _ in by_tenant[a]}
    return {"env": service_env, "a": a, "b": b, "own": own}


def _one_error_line(result) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


@FUZZ
@given(tenant=bad_tenants, query=hostile, store=st.sampled_from(["pg", "milvus"]))
def test_hostile_tenant_ids_are_a_one_line_usage_error(owner, tenant, query, store):
    result = runner.invoke(app, ["search", "--store", store, "--", tenant, query], env=owner["env"])
    _one_error_line(result)


@FUZZ
@given(query=hostile, store=st.sampled_from(["pg", "milvus"]), k=st.integers(1, 20))
def test_hostile_queries_return_only_the_tenants_own_memories(owner, query, store, k):
    result = runner.invoke(app, ["search", "--store", store, "-k", str(k), "--json", "--", owner["a"], query],
                           env=owner["env"])
    if not query.strip():
        _one_error_line(result)
        return
    assert result.exit_code == 0, (result.output, result.exception)
    hits = json.loads(result.stdout)
    assert len(hits) == min(k, len(owner["own"]))
    assert {h["event_id"] for h in hits} <= owner["own"]
    assert all(h["text"].startswith(owner["a"]) for h in hits)


@pytest.mark.parametrize("option", [["--region", "eu\" or 1==1"], ["--region", "EU"], ["-k", "0"], ["-k", "x"],
                                    ["--store", "sql"]])
def test_hostile_options_are_a_one_line_usage_error(owner, option):
    _one_error_line(runner.invoke(app, ["search", *option, "--", owner["a"], "bread"], env=owner["env"]))


def test_a_query_that_is_not_utf8_is_a_one_line_usage_error(owner):
    result = runner.invoke(app, ["search", "--", owner["a"], "x\udcff"], env=owner["env"])
    _one_error_line(result)
