"""Embedder backends: each exported graph loads offline from the packaged weights and agrees with PyTorch fp32."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amem_dagster import demo
from amem_dagster.settings import default_model_path
from resources import embedder as module
from resources import embedding_export
from resources.embedder import BACKENDS, CPU_DEFAULT_BACKEND, GRAPH_BACKENDS, EmbedderResource

ROOT = Path(__file__).resolve().parents[2]
# Built graphs are kept between test sessions here (git-ignored); builders in parallel sessions take turns.
SHARED_CACHE = ROOT / ".amem" / "models"
RUNTIME = {"onnx": "onnxruntime", "onnx-int8": "onnxruntime", "openvino": "openvino", "openvino-int8": "openvino"}
BUILD_NEEDS = {"onnx": ("onnx", "onnxscript"), "onnx-int8": ("onnx", "onnxscript"), "openvino": (),
               "openvino-int8": ("nncf",)}


def _needs(backend: str) -> None:
    # find_spec, not an import: importing openvino or nncf outside the embedder would start their usage telemetry,
    # which the embedder blocks before it imports them.
    for name in (RUNTIME[backend], *BUILD_NEEDS[backend]):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"backend {backend} needs {name}")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    batch = demo.generate(tenants=6, events=200, bad_share=0.0, skew=1.1, seed=99)
    return [json.loads(value)["text"] for _, value, _ in batch.messages]


@pytest.fixture(scope="module")
def torch_vectors(texts: list[str]) -> np.ndarray:
    return EmbedderResource(backend="torch", device="cpu").encode(texts)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a non-local connection fails the test: the weights are on disk, nothing downloads."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family == socket.AF_UNIX or host in ("127.0.0.1", "::1", "localhost"):
            return real_connect(self, address)
        raise AssertionError(f"the embedder tried to reach {address!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_backend_agrees_with_torch(backend: str, texts: list[str], torch_vectors: np.ndarray) -> None:
    _needs(backend)
    embedder = EmbedderResource(backend=backend, cache_dir=str(SHARED_CACHE))
    vectors = embedder.encode(texts)
    assert vectors.shape == (len(texts), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.mean() >= 0.99, f"{backend}: mean cosine {cosine.mean():.4f} to torch fp32"
    assert cosine.min() >= 0.95, f"{backend}: worst cosine {cosine.min():.4f} to torch fp32"
    # Order and batching barely move a text's vector (dynamic int8 scales activations per batch, so not exactly).
    again = embedder.encode(list(reversed(texts[:50])))[::-1]
    assert np.sum(again * vectors[:50], axis=1).min() >= 0.98
    assert embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    if backend.startswith("openvino") and os.environ.get("AMEM_OPENVINO_TELEMETRY") != "1":
        assert sys.modules.get("openvino_telemetry", None) is None, "OpenVINO usage telemetry was not blocked"


@pytest.fixture(scope="module")
def fresh_default_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_cpu_default_builds_offline_from_the_packaged_weights(fresh_default_cache: Path, no_network: None,
                                                               texts: list[str], torch_vectors: np.ndarray) -> None:
    _needs(CPU_DEFAULT_BACKEND)
    embedder = EmbedderResource(backend=CPU_DEFAULT_BACKEND, cache_dir=str(fresh_default_cache))
    vectors = embedder.encode(texts)
    assert np.sum(vectors * torch_vectors, axis=1).mean() >= 0.99
    built = embedding_export.export_directory(default_model_path(), CPU_DEFAULT_BACKEND, fresh_default_cache)
    assert built.parent.parent == fresh_default_cache
    meta = json.loads((built / "meta.json").read_text())
    assert meta["source"] == str(Path(default_model_path()).resolve())
    assert meta["backend"] == CPU_DEFAULT_BACKEND and meta["dimension"] == 384
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".build-")], "no half-built directory left"


def test_the_cache_is_reused_on_a_second_load(fresh_default_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                              texts: list[str]) -> None:
    _needs(CPU_DEFAULT_BACKEND)
    embedder = EmbedderResource(backend=CPU_DEFAULT_BACKEND, cache_dir=str(fresh_default_cache))
    first = embedder.encode(texts[:20])
    meta = embedding_export.export_directory(default_model_path(), CPU_DEFAULT_BACKEND, fresh_default_cache) / "meta.json"
    stamp = meta.read_text()
    monkeypatch.setattr(module, "_models", {})  # as in a new process

    def no_rebuild(*args: object) -> None:
        raise AssertionError("the cached graph was rebuilt")

    monkeypatch.setattr(embedding_export, "_build", no_rebuild)
    np.testing.assert_allclose(embedder.encode(texts[:20]), first, atol=1e-6)
    assert meta.read_text() == stamp


def test_a_cached_graph_loads_without_torch(fresh_default_cache: Path) -> None:
    """A run that embeds with a cached graph skips torch's import and the PyTorch model load (its cold start)."""
    _needs(CPU_DEFAULT_BACKEND)
    EmbedderResource(backend=CPU_DEFAULT_BACKEND, cache_dir=str(fresh_default_cache)).encode(["warm the cache"])
    script = (
        "import sys\n"
        "from resources.embedder import EmbedderResource\n"
        f"v = EmbedderResource(cache_dir={str(fresh_default_cache)!r}).encode(['a memory about Oslo'])\n"
        "assert v.shape == (1, 384), v.shape\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if module._gpu_driver_present():
        pytest.skip("with a GPU driver present, device='auto' asks torch whether CUDA works")
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_copy_of_the_same_weights_shares_the_cache(tmp_path: Path) -> None:
    copy = tmp_path / "same-weights"
    copy.symlink_to(default_model_path(), target_is_directory=True)
    assert embedding_export.model_fingerprint(str(copy)) == embedding_export.model_fingerprint(default_model_path())


def test_backend_resolution() -> None:
    assert set(BACKENDS) == {"auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8"}
    assert set(BACKENDS) == {"auto", "torch", *GRAPH_BACKENDS}  # settings' list matches what can be built
    if not module._gpu_driver_present():
        assert EmbedderResource().resolved_backend == CPU_DEFAULT_BACKEND
    assert EmbedderResource(device="cuda").resolved_backend == "torch"
    assert EmbedderResource(device="cpu", backend="torch").resolved_backend == "torch"
    # A hub name, not a local directory: only torch can load it.
    assert EmbedderResource(device="cpu", model="someone/some-model").resolved_backend == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        _ = EmbedderResource(device="cuda", backend="onnx").resolved_backend
    with pytest.raises(ValueError, match="not one of"):
        _ = EmbedderResource(backend="tensorrt").resolved_backend


def test_every_backend_reports_the_same_model_identity() -> None:
    names = {EmbedderResource(backend=b, device="cpu").model_name for b in BACKENDS}
    assert names == {"sentence-transformers/all-MiniLM-L6-v2"}
    assert {EmbedderResource(backend=b, model="/models/custom").model_name for b in BACKENDS} == {"/models/custom"}


def test_an_explicit_backend_that_cannot_build_fails_loudly(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "modules.json").write_text("[]")
    with pytest.raises(Exception):
        EmbedderResource(model=str(bogus), backend="onnx", cache_dir=str(tmp_path / "cache")).encode(["x"])
