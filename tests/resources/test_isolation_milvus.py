"""Milvus tenant isolation under fuzzing, against a real Milvus Lite collection holding two tenants.

Every search, query (count) and delete goes through `tenant_filter`; Milvus Lite binds no filter templates, so
`render_literals` inlines the values as escaped literals. Hypothesis throws injection attempts, quotes,
backslashes, newlines, control characters, braces, over-long and non-string values at tenant ids, subject ids
and event ids: each call either works on its own tenant's rows only or fails with a validation error before
Milvus is asked, and tenant B's rows never change. On Milvus Lite each tenant's rows also sit in a partition of
their own that reads name: partition names must never collide, and a partition must hold one tenant only.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from amem_dagster.errors import EventRejected
from amem_dagster.events import TENANT_ID_RE
from resources.milvus import MilvusResource
from resources.milvus_layout import tenant_partition
from resources.records import VectorRow

pytestmark = pytest.mark.integration
EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
NOW = datetime.now(UTC)
DIM = 384
VALIDATION = (EventRejected, ValueError, TypeError)

INJECTIONS = [
    '" or tenant_id != "', "' or tenant_id != '", '" || tenant_id != "', '") or (tenant_id != "',
    '\\" or tenant_id != \\"', '\\', '\\\\', '"', "'", "a\nb", "\r\n", "\n or tenant_id != \"", "{tenant_id}",
    "{region}", "{0}", "}{", "%s", "\\u0022 or 1==1", 'x" or 1 == 1 or "', 'x" in ["', "tenant_id like \"%\"",
    "% ", "\x00", "\x1b[31m", "\t", "\u2028", "\ufeff", "é€😀", "' OR '1'='1", "'; DROP TABLE x; --",
    "${jndi:ldap://x}", "../../", "null", "true", "[]", "a" * 64, "a" * 5_000, "b" * 100_000,
]
# No lone surrogates here: those are the subject of test_invalid_utf8_in_a_filter_value_is_a_clean_error.
hostile = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(st.characters(codec="utf-8"), max_size=60),
    st.text(st.characters(codec="utf-8", categories=("Cc", "Po", "Ps", "Pe", "Sm", "Zs", "Zl")), max_size=20),
    st.builds(lambda a, b: a + b, st.sampled_from(INJECTIONS), st.text(st.characters(codec="utf-8"), max_size=8)),
)
tenant_ids = st.one_of(
    hostile,
    st.from_regex(TENANT_ID_RE, fullmatch=True),  # well-formed: must find nothing (no such tenant)
    st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3),  # invalid UTF-8 (surrogates)
    st.binary(max_size=20), st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2),
)


def _vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def world(service_env):
    """Tenants A and B in one collection; each holds a row per hostile subject id plus ordinary rows."""
    milvus = MilvusResource(uri=service_env["AMEM_MILVUS_URI"], collection_prefix=f"iso_{uuid.uuid4().hex[:8]}")
    rng = np.random.default_rng(11)
    a, b = (f"iso-{uuid.uuid4().hex[:10]}" for _ in range(2))
    subjects = [s for s in INJECTIONS if len(s.encode()) <= 1024] + ["alice", "bob"]
    rows = {t: [VectorRow(t, str(uuid.uuid4()), "eu", NOW - timedelta(days=i % 3), s, "m", _vector(rng))
                for i, s in enumerate(subjects)] for t in (a, b)}
    milvus.upsert([*rows[a], *rows[b]])
    return {"milvus": milvus, "a": a, "b": b, "rows": rows, "counts": {t: len(rows[t]) for t in (a, b)}}


def _unchanged(world) -> None:
    milvus = world["milvus"]
    for tenant in (world["a"], world["b"]):
        assert milvus.count(tenant, "eu") == world["counts"][tenant], tenant


@FUZZ
@given(tenant=tenant_ids, operation=st.sampled_from(["count", "search", "delete_all", "delete_ids",
                                                      "delete_subject", "count_subject"]))
def test_hostile_tenant_ids_are_rejected_before_milvus_or_find_nothing(world, tenant, operation):
    milvus, a, b = world["milvus"], world["a"], world["b"]
    assume(tenant not in (a, b))
    a_row = world["rows"][a][0]
    calls = {
        "count": lambda: milvus.count(tenant, "eu"),
        "search": lambda: milvus.search(tenant, "eu", a_row.embedding, k=50),
        "delete_all": lambda: milvus.delete(tenant, "eu", all_of_tenant=True),
        "delete_ids": lambda: milvus.delete(tenant, "eu", event_ids=[a_row.event_id, world["rows"][b][0].event_id]),
        "delete_subject": lambda: milvus.delete(tenant, "eu", subject_id="alice"),
        "count_subject": lambda: milvus.count(tenant, "eu", subject_id="alice"),
    }
    valid = isinstance(tenant, str) and TENANT_ID_RE.fullmatch(tenant) is not None
    if not valid:
        with pytest.raises(EventRejected):
            calls[operation]()
    else:
        assert calls[operation]() in (0, [])
    _unchanged(world)


@FUZZ
@given(subject=hostile, event_ids=st.lists(hostile, max_size=4), created=st.integers(-5, 5),
       operation=st.sampled_from(["count", "delete_ids", "delete_subject", "delete_restore", "search"]))
def test_hostile_subject_and_event_ids_stay_inside_the_tenant(world, subject, event_ids, created, operation):
    milvus, a, b, rows = world["milvus"], world["a"], world["b"], world["rows"]
    own = [r for r in rows[a] if r.subject_id == subject]
    before = NOW + timedelta(days=created)
    if operation == "count":
        expected = sum(1 for r in own if r.created_at < before)
        assert milvus.count(a, "eu", subject_id=subject, created_before=before) == expected
    elif operation == "delete_ids":
        assert milvus.delete(a, "eu", event_ids=event_ids) == 0  # no such event ids
        assert milvus.delete(a, "eu", event_ids=[*event_ids, rows[b][0].event_id]) == 0  # B's id: not A's row
    elif operation == "delete_subject":
        if own:
            return  # deleting A's own matching rows is covered by delete_restore
        assert milvus.delete(a, "eu", subject_id=subject) == 0
    elif operation == "delete_restore":
        target = own or [rows[a][len(subject) % len(rows[a])]]
        deleted = (milvus.delete(a, "eu", subject_id=subject) if own
                   else milvus.delete(a, "eu", event_ids=[*event_ids, target[0].event_id]))
        assert deleted == len(target)
        assert milvus.count(a, "eu") == world["counts"][a] - len(target)
        assert milvus.count(b, "eu") == world["counts"][b]
        milvus.upsert(target)
    else:
        hits = milvus.search(a, "eu", rows[b][len(subject) % len(rows[b])].embedding, k=100)
        assert {h.event_id for h in hits} <= {r.event_id for r in rows[a]}
    _unchanged(world)


@pytest.mark.parametrize("value", ["\udcff", "alice\ud800"])
def test_invalid_utf8_in_a_filter_value_is_a_clean_error(world, value):
    try:
        with pytest.raises(VALIDATION):
            world["milvus"].count(world["a"], "eu", subject_id=value)
    finally:
        _unchanged(world)


@FUZZ
@given(first=st.from_regex(TENANT_ID_RE, fullmatch=True), second=st.from_regex(TENANT_ID_RE, fullmatch=True))
def test_tenant_partition_names_never_collide(first, second):
    names = tenant_partition(first), tenant_partition(second)
    assert (names[0] == names[1]) == (first == second)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name) for name in names)


def test_each_partition_holds_its_own_tenant_only(world):
    milvus, rows = world["milvus"], world["rows"]
    client, name = MilvusClient(uri=milvus.uri), milvus.ensure_collection("eu")
    for tenant in (world["a"], world["b"]):
        found = client.query(name, filter="", partition_names=[tenant_partition(tenant)],
                             output_fields=["tenant_id", "event_id"], limit=1000, consistency_level="Strong")
        assert {r["tenant_id"] for r in found} == {tenant}
        assert {r["event_id"] for r in found} == {r.event_id for r in rows[tenant]}
