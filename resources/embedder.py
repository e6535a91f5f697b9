"""Sentence-transformers embedder: L2-normalised float32 vectors, the model loaded once per process.

Backends (field `backend`):

* ``torch`` — `SentenceTransformer.encode` in PyTorch fp32, on CPU or CUDA.
* ``onnx`` / ``onnx-int8`` — the whole sentence-transformers pipeline (transformer, pooling, normalisation) exported
  with `torch.onnx.export`, attention and GELU fused by ONNX Runtime's transformer optimizer, run by ONNX Runtime;
  the int8 variant is ONNX Runtime's dynamic quantisation (int8 weights, activations quantised per batch).
* ``openvino`` / ``openvino-int8`` — the pipeline exported with `torch.export` and converted by OpenVINO, run by the
  OpenVINO CPU runtime; the int8 variant is NNCF post-training static quantisation calibrated on texts from the
  project's own demo generator (never a downloaded data set).
* ``auto`` (default) — ``torch`` when CUDA is available, otherwise `CPU_DEFAULT_BACKEND`, chosen by
  `bench/embedding.py` as the fastest backend whose vectors stay within mean cosine 0.99 of PyTorch fp32.

The exported / quantised graphs are built from the local model directory (by default the packaged
all-MiniLM-L6-v2 weights) at first use and cached under ``$AMEM_HOME/models/<backend>/<fingerprint>/`` (or
`cache_dir`), keyed by a hash of the model files, so nothing is ever downloaded and a copy of the same weights
under another path reuses the cache. Loading a cached graph needs neither torch nor transformers: only the
tokenizer (`tokenizers`) and the runtime are imported, which makes a run's cold start seconds shorter.

sentence-transformers' own ``backend="onnx"/"openvino"`` options are not used: they go through optimum, whose ONNX
package pins transformers < 4.58 (sentence-transformers 6.2 needs >= 5) and whose Intel package pins
transformers < 5.6 and hard-requires torchvision, and PyPI's torchvision wheels are CUDA builds that break
`import transformers` next to the CPU torch wheel this project installs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from amem_dagster.settings import EMBED_BACKENDS, default_model_path
from resources.embedding_export import GRAPH_BACKENDS, ensure_exported, offline
from resources.embedding_runtime import GraphEncoder

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Modules that keep the transformer's width, so the pooling config alone tells the output dimension.
_SHAPE_KEEPING = {"Transformer", "Pooling", "Normalize"}

BACKENDS = EMBED_BACKENDS  # AMEM_EMBED_BACKEND: "auto", "torch" and every GRAPH_BACKENDS name
# The fastest backend within mean cosine 0.99 of PyTorch fp32 on this project's texts (bench/embedding.py).
CPU_DEFAULT_BACKEND = "onnx-int8"

log = logging.getLogger(__name__)
_lock = threading.Lock()
_models: dict[tuple[str, ...], Any] = {}


@functools.cache
def _auto_device() -> str:
    if _gpu_driver_present():
        import torch

        if torch.cuda.is_available():
            return "cuda"
    log.info("no CUDA device is available; embedding falls back to CPU")
    return "cpu"


def _gpu_driver_present() -> bool:
    """Whether a CUDA (or ROCm) driver could be there at all; without one, asking torch only costs its import."""
    if not sys.platform.startswith("linux"):
        return sys.platform.startswith("win")  # no CUDA on macOS; on Windows only torch can tell
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))



def _load_torch(path: str, device: str) -> Any:
    offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


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
    backend: str = "auto"
    cache_dir: str = ""

    @property
    def model_path(self) -> str:
        return self.model or default_model_path()

    @property
    def model_name(self) -> str:
        # The model's identity, the same for every backend: their vectors agree within cosine 0.99, so vectors
        # written by one backend stay comparable with queries encoded by another and switching backends does
        # not make every stored vector look stale (pending_embeddings keys on this name).
        return self.model or PACKAGED_MODEL_NAME

    @property
    def dimension(self) -> int:
        dim = _dimension_from_config(self.model_path)
        if dim is None:
            dim = int(self._model().dimension)
        return dim

    @property
    def resolved_backend(self) -> str:
        """The backend `encode` uses: `backend`, or for "auto" torch on CUDA and the CPU default otherwise."""
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        device = self._device()
        if self.backend != "auto":
            if self.backend in GRAPH_BACKENDS and device != "cpu":
                raise ValueError(f"backend {self.backend!r} runs on the CPU, not on device {device!r}")
            return self.backend
        if device != "cpu" or not Path(self.model_path).is_dir():
            return "torch"
        return CPU_DEFAULT_BACKEND

    @property
    def model_cache_root(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser().resolve()
        return Path(os.environ.get("AMEM_HOME") or "./.amem").expanduser().resolve() / "models"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model().encode(list(texts), self.batch_size)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def _device(self) -> str:
        return _auto_device() if self.device == "auto" else self.device

    def _model(self) -> Any:
        backend = self.resolved_backend
        if backend == "torch":
            key = (self.model_path, self._device())
        else:
            key = (self.model_path, "cpu", backend, str(self.model_cache_root))
        with _lock:
            if key not in _models:
                _models[key] = self._open(backend)
            return _models[key]

    def _open(self, backend: str) -> Any:
        if backend == "torch":
            return _TorchEncoder(_load_torch(self.model_path, self._device()))
        try:
            directory = ensure_exported(self.model_path, backend, self.model_cache_root)
            return GraphEncoder(directory)
        except Exception:
            if self.backend != "auto":
                raise
            log.warning("could not build the %s graph of %s; embedding with torch instead", backend,
                        self.model_path, exc_info=True)
            return _TorchEncoder(_load_torch(self.model_path, "cpu"))


class _TorchEncoder:
    """sentence-transformers' own encode in PyTorch."""

    def __init__(self, model: Any) -> None:
        self.model = model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(getter())

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)
