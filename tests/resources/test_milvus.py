"""MilvusResource against the embedded Milvus Lite server: idempotence, isolation, deletion, filters, layouts."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pymilvus import MilvusClient

from amem_dagster.errors import EventRejected
from resources import milvus_layout as layout
from resources.milvus import MilvusResource, render_literals, tenant_filter
from resources.records import VectorRow

pytestmark = pytest.mark.integration

DIM = 384
NOW = datetime.now(UTC)
HOSTILE = [
    '"', "'", '" or tenant_id != "', "' or tenant_id != '", "\\", '\\"', "a\nb", "\r\n", "{tenant_id}",
    'x" || "1" == "1', "é€😀", "\t\x00\x7f",
]
_rng = np.random.default_rng(7)


@pytest.fixture(scope="module")
def milvus(service_env: dict[str, str]) -> MilvusResource:
    return MilvusResource(uri=service_env["AMEM_MILVUS_URI"], collection_prefix=f"test_{uuid.uuid4().hex[:8]}")


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def vec() -> np.ndarray:
    v = _rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def row(tenant_id: str, event_id: str | None = None, *, subject_id: str | None = None,
        created_at: datetime = NOW, embedding: np.ndarray | None = None) -> VectorRow:
    return VectorRow(tenant_id=tenant_id, event_id=event_id or str(uuid.uuid4()), region="eu",
                     created_at=created_at, subject_id=subject_id, model="test-model",
                     embedding=vec() if embedding is None else embedding)


def test_upsert_is_idempotent(milvus: MilvusResource) -> None:
    t = tenant()
    rows = [row(t) for _ in range(5)]
    assert milvus.upsert(rows) == 5
    assert milvus.upsert(rows) == 5
    assert milvus.count(t, "eu") == 5
    moved = row(t, rows[0].event_id)  # the same key with a new vector replaces the old row
    milvus.upsert([moved])
    hits = milvus.search(t, "eu", moved.embedding, k=10)
    assert [h.event_id for h in hits].count(moved.event_id) == 1 and len(hits) == 5
    assert hits[0].event_id == moved.event_id and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_deferred_flush(milvus: MilvusResource) -> None:
    t = tenant()
    assert milvus.upsert([row(t), row(t)], flush=False) == 2
    milvus.flush(["eu"])
    assert milvus.count(t, "eu") == 2


def test_same_event_id_under_two_tenants_stays_two_vectors(milvus: MilvusResource) -> None:
    a, b, event_id = tenant(), tenant(), str(uuid.uuid4())
    a_vec, b_vec = vec(), vec()
    milvus.upsert([row(a, event_id, embedding=a_vec), row(b, event_id, embedding=b_vec)])
    assert milvus.count(a, "eu") == milvus.count(b, "eu") == 1
    [hit] = milvus.search(a, "eu", a_vec, k=5)
    assert hit.event_id == event_id
    assert hit.score == pytest.approx(1.0, abs=1e-4)


def test_search_never_returns_another_tenants_vector(milvus: MilvusResource) -> None:
    a, b = tenant(), tenant()
    a_rows = [row(a) for _ in range(20)]
    b_row = row(b)
    milvus.upsert([*a_rows, b_row])
    hits = milvus.search(a, "eu", b_row.embedding, k=50)
    assert {h.event_id for h in hits} == {r.event_id for r in a_rows}
    assert max(h.score for h in hits) < 0.9
    assert [h.event_id for h in milvus.search(b, "eu", b_row.embedding, k=50)] == [b_row.event_id]


def test_delete_by_subject_removes_only_that_subject(milvus: MilvusResource) -> None:
    a, b = tenant(), tenant()
    alice = [row(a, subject_id="alice") for _ in range(3)]
    others = [row(a, subject_id="bob"), row(a)]
    milvus.upsert([*alice, *others, row(b, subject_id="alice")])
    assert milvus.delete(a, "eu", subject_id="alice") == 3
    assert milvus.count(a, "eu") == 2
    assert milvus.count(b, "eu") == 1
    remaining = {h.event_id for h in milvus.search(a, "eu", alice[0].embedding, k=10)}
    assert remaining == {r.event_id for r in others}


def test_delete_created_before(milvus: MilvusResource) -> None:
    t = tenant()
    old = [row(t, created_at=NOW - timedelta(days=40)) for _ in range(2)]
    new = row(t, created_at=NOW - timedelta(days=1))
    milvus.upsert([*old, new])
    assert milvus.delete(t, "eu", created_before=NOW - timedelta(days=30)) == 2
    assert [h.event_id for h in milvus.search(t, "eu", new.embedding)] == [new.event_id]


def test_delete_by_event_ids_and_all_of_tenant(milvus: MilvusResource) -> None:
    t = tenant()
    rows = [row(t) for _ in range(4)]
    milvus.upsert(rows)
    assert milvus.delete(t, "eu", event_ids=[rows[0].event_id, "missing"]) == 1
    assert milvus.delete(t, "eu", event_ids=[]) == 0
    with pytest.raises(ValueError):
        milvus.delete(t, "eu")
    with pytest.raises(ValueError):
        milvus.delete(t, "eu", subject_id="x", all_of_tenant=True)
    assert milvus.delete(t, "eu", all_of_tenant=True) == 3
    assert milvus.count(t, "eu") == 0


def test_hostile_strings_cannot_change_the_filter(milvus: MilvusResource) -> None:
    a, b = tenant(), tenant()
    a_rows = {s: row(a, subject_id=s) for s in HOSTILE}
    bystander = row(a, subject_id="bystander")
    milvus.upsert([*a_rows.values(), bystander, *(row(b, subject_id=s) for s in HOSTILE)])
    for i, subject in enumerate(HOSTILE, start=1):
        assert milvus.delete(a, "eu", subject_id=subject) == 1, repr(subject)
        assert milvus.count(a, "eu") == len(HOSTILE) + 1 - i
        assert milvus.count(b, "eu") == len(HOSTILE)
    assert milvus.delete(b, "eu", event_ids=HOSTILE) == 0
    assert milvus.delete(a, "eu", subject_id=f'" or tenant_id == "{b}') == 0
    assert milvus.count(b, "eu") == len(HOSTILE)
    assert milvus.count(a, "eu") == 1


def test_filter_keeps_values_out_of_the_expression() -> None:
    expr, params = tenant_filter("acme", "eu", event_ids=["e1"], subject_id='" or tenant_id != "',
                                 created_before=datetime(2024, 1, 1, tzinfo=UTC))
    assert expr == ("tenant_id == {tenant_id} and region == {region} and event_id in {event_ids}"
                    " and subject_id == {subject_id} and created_at < {created_before}")
    assert params["created_before"] == 1704067200000
    assert render_literals("subject_id == {s}", {"s": 'a"\\\n'}) == r'subject_id == "a\"\\\n"'


@pytest.mark.parametrize("bad", ["", "Acme", "a b", 'x" or "1" == "1', "a" * 64, None])
def test_invalid_tenant_id_raises(milvus: MilvusResource, bad: object) -> None:
    with pytest.raises(EventRejected):
        milvus.count(bad, "eu")  # type: ignore[arg-type]
    with pytest.raises(EventRejected):
        milvus.upsert([row(bad)])  # type: ignore[arg-type]


def test_invalid_region_raises(milvus: MilvusResource) -> None:
    with pytest.raises(ValueError):
        milvus.count(tenant(), 'eu" or "1')


def test_each_tenant_has_its_own_partition_and_reads_name_it(milvus: MilvusResource) -> None:
    a, b = tenant(), tenant()
    milvus.upsert([row(a), row(a), row(b)])
    name, client = milvus.ensure_collection("eu"), MilvusClient(uri=milvus.uri)
    assert layout.layout_of(client.describe_collection(name)) == layout.TENANT_PARTITIONS
    for t, n in ((a, 2), (b, 1)):
        rows = client.query(name, filter="", partition_names=[layout.tenant_partition(t)],
                             output_fields=["tenant_id"], limit=100)
        assert [r["tenant_id"] for r in rows] == [t] * n
    assert milvus._where(a, "eu")["partition_names"] == [layout.tenant_partition(a)]
    assert milvus.search(tenant(), "eu", vec()) == [] and milvus.count(tenant(), "eu") == 0  # no partition


def _old_layout(service_env: dict[str, str]) -> tuple[MilvusResource, MilvusClient, str]:
    """A collection as earlier versions made it on Milvus Lite: tenant_id is a partition key."""
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"], collection_prefix=f"old_{uuid.uuid4().hex[:8]}")
    client, name = MilvusClient(uri=milvus.uri), milvus.collection_name("eu")
    layout.create(client, name, dim=DIM, layout=layout.PARTITION_KEY, m=16, ef_construction=64)
    return milvus, client, name


def test_an_empty_collection_of_the_old_layout_is_recreated(service_env: dict[str, str]) -> None:
    milvus, client, name = _old_layout(service_env)
    t = tenant()
    milvus.upsert([row(t)])
    assert layout.layout_of(client.describe_collection(name)) == layout.TENANT_PARTITIONS
    assert milvus.count(t, "eu") == 1


def test_a_filled_collection_of_the_old_layout_works_until_relayout(service_env, caplog) -> None:
    milvus, client, name = _old_layout(service_env)
    a, b = tenant(), tenant()
    a_rows, b_row = [row(a) for _ in range(30)], row(b)
    client.insert(name, [milvus._entity(r) for r in [*a_rows, b_row]])
    client.flush(name)
    with caplog.at_level(logging.WARNING, logger="resources.milvus"):
        assert milvus.count(a, "eu") == 30
    assert "amem milvus-relayout --region eu" in caplog.text
    assert layout.layout_of(client.describe_collection(name)) == layout.PARTITION_KEY
    assert "partition_names" not in milvus._where(a, "eu")
    late = row(a)
    milvus.upsert([late])  # writes keep working in the old layout
    assert {h.event_id for h in milvus.search(a, "eu", b_row.embedding, k=50)} == {r.event_id for r in [*a_rows, late]}
    stale = name + layout.RELAYOUT_SUFFIX  # a partial copy left by an interrupted relayout
    layout.create(client, stale, dim=DIM, layout=layout.TENANT_PARTITIONS, m=16, ef_construction=64)
    assert milvus.relayout("eu") == 32
    assert layout.layout_of(client.describe_collection(name)) == layout.TENANT_PARTITIONS
    assert not client.has_collection(stale)
    assert milvus.count(a, "eu") == 31 and milvus.count(b, "eu") == 1
    [hit, *_] = milvus.search(a, "eu", a_rows[3].embedding, k=50)
    assert hit.event_id == a_rows[3].event_id and hit.score == pytest.approx(1.0, abs=1e-4)
    assert milvus.relayout("eu") == 0


def test_a_relayout_stopped_after_dropping_the_original_is_finished(service_env: dict[str, str]) -> None:
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"], collection_prefix=f"cut_{uuid.uuid4().hex[:8]}")
    client, name = MilvusClient(uri=milvus.uri), milvus.collection_name("eu")
    copy, t = name + layout.RELAYOUT_SUFFIX, tenant()
    layout.create(client, copy, dim=DIM, layout=layout.TENANT_PARTITIONS, m=16, ef_construction=64)
    client.create_partition(copy, layout.tenant_partition(t))
    client.insert(copy, [milvus._entity(row(t))], partition_name=layout.tenant_partition(t))
    client.flush(copy)
    assert milvus.count(t, "eu") == 1
    assert not client.has_collection(copy)


def test_search_reloads_a_released_collection(milvus: MilvusResource) -> None:
    from pymilvus import MilvusClient

    t = tenant()
    r = row(t)
    milvus.upsert([r])
    MilvusClient(uri=milvus.uri).release_collection(milvus.ensure_collection("eu"))
    assert [h.event_id for h in milvus.search(t, "eu", r.embedding)] == [r.event_id]
