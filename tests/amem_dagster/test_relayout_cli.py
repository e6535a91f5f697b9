"""`amem milvus-relayout`: an old-layout Milvus Lite collection rebuilt with a partition per tenant, from the shell."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np
from pymilvus import MilvusClient
from typer.testing import CliRunner

from amem_dagster.cli.app import app
from resources import milvus_layout as layout
from resources.milvus import MilvusResource
from resources.records import VectorRow

runner = CliRunner()


def test_relayout_copies_an_old_collection_once_and_searches_then_see_only_the_tenant(service_env) -> None:
    region = f"r{uuid.uuid4().hex[:8]}"  # a region of its own: its collection is this test's alone
    env = {**service_env, "AMEM_REGIONS": f"eu,us,{region}"}
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"])
    client, name = MilvusClient(uri=milvus.uri), milvus.collection_name(region)
    layout.create(client, name, dim=384, layout=layout.PARTITION_KEY, m=16, ef_construction=64)
    rng = np.random.default_rng(3)
    rows = [VectorRow(tenant, str(uuid.uuid4()), region, datetime.now(UTC), None, "m",
                      rng.normal(size=384).astype(np.float32))
            for tenant in ("acme", "acme", "acme", "globex")]
    client.insert(name, [milvus._entity(r) for r in rows])
    client.flush(name)

    first = runner.invoke(app, ["milvus-relayout", "--region", region, "--json"], env=env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == [{"region": region, "collection": name, "rows_copied": 4}]
    assert layout.layout_of(client.describe_collection(name)) == layout.TENANT_PARTITIONS
    assert milvus.count("acme", region) == 3 and milvus.count("globex", region) == 1
    hits = milvus.search("globex", region, rows[0].embedding, k=10)
    assert [h.event_id for h in hits] == [rows[3].event_id]

    again = runner.invoke(app, ["milvus-relayout", "--region", region], env=env, catch_exceptions=False)
    assert again.exit_code == 0 and "nothing to do" in again.stdout


def test_an_unknown_region_is_one_line(service_env) -> None:
    result = runner.invoke(app, ["milvus-relayout", "--region", "mars"], env=service_env)
    assert result.exit_code == 2
    assert "'mars' is not one of" in result.stderr and "Traceback" not in result.stderr
