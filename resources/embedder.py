"""Sentence-transformers embedder: L2-normalised float32 vectors, the model loaded once per process."""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from amem_dagster.settings import default_model_path

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Modules that keep the transformer's width, so the pooling config alone tells the output dimension.
_SHAPE_KEEPING = {"Transformer", "Pooling", "Normalize"}

log = logging.getLogger(__name__)
_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}


@functools.cache
def _auto_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    log.info("no CUDA device is available; embedding falls back to CPU")
    return "cpu"


def _load(path: str, device: str) -> Any:
    with _lock:
        if (path, device) not in _models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            # A per-load tqdm bar would only clutter captured run logs.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from sentence_transformers import SentenceTransformer

            _models[(path, device)] = SentenceTransformer(path, device=device)
        return _models[(path, device)]


@functools.cache
def _dimension_from_config(path: str) -> int | None:
    """The output width read from a local model's config files, or None when only loading it can tell."""
    root = Path(path)
    try:
        modules = json.loads((root / "modules.json").read_text())
        if any(m["type"].rsplit(".", 1)[-1] not in _SHAPE_KEEPING for m in modules):
            return None
        pooling = next(m for m in modules if m["type"].endswith("Pooling"))
        return int(json.loads((root / pooling["path"] / "config.json").read_text())["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None


class EmbedderResource(dg.ConfigurableResource):
    """Turns memory texts into unit-length vectors with a sentence-transformers model (packaged by default)."""

    model: str = ""
    device: str = "auto"
    batch_size: int = 64

    @property
    def model_path(self) -> str:
        return self.model or default_model_path()

    @property
    def model_name(self) -> str:
        return self.model or PACKAGED_MODEL_NAME

    @property
    def dimension(self) -> int:
        dim = _dimension_from_config(self.model_path)
        if dim is None:
            model = self._model()
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            dim = int(getter())
        return dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model().encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def _device(self) -> str:
        return _auto_device() if self.device == "auto" else self.device

    def _model(self) -> Any:
        return _load(self.model_path, self._device())
