"""Plain records passed between resources: a stored vector and a search hit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class VectorRow:
    """One event's embedding with the keys every store needs to place, find and delete it."""

    tenant_id: str
    event_id: str
    region: str
    created_at: datetime
    subject_id: str | None
    model: str
    embedding: np.ndarray


@dataclass(frozen=True)
class SearchHit:
    """One nearest neighbour: cosine similarity in [-1, 1], higher is closer."""

    event_id: str
    score: float
    text: str | None = None
