"""Chunking of the embedding backlog: about CHUNK texts per chunk, cut at tenant boundaries where it can."""

from itertools import groupby

from assets.memory_writes import chunks_by_tenant


def _todo(*sizes: int) -> list[tuple[str, int]]:
    return [(f"t{n}", i) for n, size in enumerate(sizes) for i in range(size)]


def _shape(chunks) -> list[list[tuple[str, int]]]:
    """Each chunk as its (tenant, count) runs."""
    return [[(tenant, len(list(items))) for tenant, items in groupby(chunk, key=lambda x: x[0])] for chunk in chunks]


def test_whole_tenants_share_a_chunk_until_it_is_full() -> None:
    chunks = chunks_by_tenant(_todo(3, 3, 2), size=6)
    assert _shape(chunks) == [[("t0", 3), ("t1", 3)], [("t2", 2)]]


def test_a_tenant_is_never_split_when_it_fits_in_the_next_chunk() -> None:
    assert _shape(chunks_by_tenant(_todo(4, 4), size=6)) == [[("t0", 4)], [("t1", 4)]]


def test_a_tenant_larger_than_a_chunk_is_split_in_full_chunks() -> None:
    chunks = chunks_by_tenant(_todo(2, 13, 1), size=5)
    assert [len(c) for c in chunks] == [2, 5, 5, 4]
    assert _shape(chunks)[-1] == [("t1", 3), ("t2", 1)]


def test_every_item_is_kept_once_and_in_order() -> None:
    todo = _todo(7, 1, 30, 2, 2, 9)
    for size in (1, 3, 8, 100):
        chunks = chunks_by_tenant(todo, size=size)
        assert [x for c in chunks for x in c] == todo
        assert all(0 < len(c) <= size for c in chunks)
    assert chunks_by_tenant([], size=4) == []
