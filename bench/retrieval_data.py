"""Retrieval benchmark data: clustered 384-d unit vectors per tenant (Zipf sizes), ids, timestamps, exact answers.

No model is run (embedding 200k texts would take longer than the whole budget here). 256 global "topics" each
have a centre and a 16-d subspace of variation; a tenant uses a few topics, and a vector is centre + subspace
noise + a little isotropic noise, so neighbours share topics, tenants overlap and within-topic cosines (about 0.7)
resemble sentence embeddings. created_at is spread over the last `days` days.
"""

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from amem_dagster import demo

TOPICS, SUBSPACE = 256, 16


class Dataset:
    """Clustered unit vectors per tenant, their ids and timestamps, and query vectors drawn like them."""

    def __init__(self, vectors: int, tenants: int, skew: float, dim: int, days: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.rng = rng
        self.centres = unit(rng.normal(size=(TOPICS, dim)))
        self.bases = rng.normal(size=(TOPICS, SUBSPACE, dim)).astype(np.float32) / np.sqrt(dim)
        self.sizes = demo.tenant_sizes(vectors, tenants, skew)
        self.tenants = [f"rt-{i:03d}" for i in range(len(self.sizes))]
        self.topics = {t: rng.choice(TOPICS, size=int(np.clip(n // 400, 3, 24)), replace=False)
                       for t, n in zip(self.tenants, self.sizes, strict=True)}
        parts, owner = [], []
        for index, (tenant, size) in enumerate(zip(self.tenants, self.sizes, strict=True)):
            parts.append(self.draw(tenant, size))
            owner.append(np.full(size, index, dtype=np.int32))
        self.vectors = np.concatenate(parts).astype(np.float32)
        self.owner = np.concatenate(owner)
        self.event_ids = [str(uuid.UUID(int=int(x), version=4)) for x in rng.integers(0, 2**63, size=len(self.owner))]
        now = datetime.now(UTC)
        offsets = rng.integers(0, days * 86_400, size=len(self.owner))
        self.created_at = [now - timedelta(seconds=int(s)) for s in offsets]
        self.rows_of = {t: np.flatnonzero(self.owner == i) for i, t in enumerate(self.tenants)}

    def tenant_of(self, row: int) -> str:
        return self.tenants[self.owner[row]]

    def draw(self, tenant: str, count: int) -> np.ndarray:
        topic = self.rng.choice(self.topics[tenant], size=count)
        out = self.rng.normal(size=(count, self.dim)).astype(np.float32) * (0.3 / np.sqrt(self.dim))
        for t in np.unique(topic):
            rows = np.flatnonzero(topic == t)
            z = self.rng.normal(size=(len(rows), SUBSPACE)).astype(np.float32)
            out[rows] += self.centres[t] + (z @ self.bases[t]) * 0.15
        return unit(out)

    def exact_top(self, tenant: str, query: np.ndarray, k: int) -> set[str]:
        rows = self.rows_of[tenant]
        scores = self.vectors[rows] @ query
        best = rows[np.argsort(-scores, kind="stable")[:k]]
        return {self.event_ids[i] for i in best}


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)
