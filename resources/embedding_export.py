"""Builds an exported sentence-embedding graph (ONNX or OpenVINO, fp32 or int8) from local weights, cached by hash."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from resources.embedding_quantize import quantize_onnx
from resources.embedding_runtime import GraphEncoder, block_openvino_telemetry

GRAPH_BACKENDS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
# Bump when the exported graph or its metadata changes: caches of another format are rebuilt, not reused.
EXPORT_FORMAT = 2
CALIBRATION_TEXTS = 300
CALIBRATION_SEED = 20_240_601
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Files that define a model's numbers; README, git attributes and earlier exports do not.
_FINGERPRINT_SUFFIXES = {".json", ".txt", ".model", ".safetensors", ".bin", ".pt", ".py"}
_FINGERPRINT_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}

log = logging.getLogger(__name__)


def offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A per-load tqdm bar would only clutter captured run logs.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@functools.cache
def model_fingerprint(path: str) -> str:
    """A hash of the files that define a local model's numbers (weights, configs, tokenizer)."""
    root = Path(path).resolve()
    digest = hashlib.sha256(f"amem-export-format-{EXPORT_FORMAT}".encode())
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES
        and not _FINGERPRINT_SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))
    if not files:
        raise ValueError(f"{path} holds no model files")
    for file in files:
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]


def export_directory(model_path: str, backend: str, cache_root: Path) -> Path:
    return Path(cache_root) / backend / model_fingerprint(model_path)


def ensure_exported(model_path: str, backend: str, cache_root: Path) -> Path:
    """The cached graph of `model_path` for `backend`, built first if missing (one builder at a time)."""
    if backend not in GRAPH_BACKENDS:
        raise ValueError(f"backend {backend!r} has no exported graph")
    if not Path(model_path).is_dir():
        raise ValueError(f"backend {backend!r} needs a local model directory, not {model_path!r}")
    target = export_directory(model_path, backend, cache_root)
    if (target / "meta.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / ".lock"):
        if (target / "meta.json").exists():  # another process built it while this one waited
            return target
        building = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            started = time.perf_counter()
            _build(model_path, backend, building)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(building, target)
            log.info("built the %s graph of %s in %.1fs at %s", backend, model_path,
                     time.perf_counter() - started, target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def calibration_texts(count: int = CALIBRATION_TEXTS, seed: int = CALIBRATION_SEED) -> list[str]:
    """Agent-memory-like texts from the demo generator: the calibration set for static int8 quantisation."""
    from amem_dagster import demo

    batch = demo.generate(tenants=8, events=count, bad_share=0.0, seed=seed)
    return [json.loads(value)["text"] for _, value, _ in batch.messages]


def _build(model_path: str, backend: str, out: Path) -> None:
    offline()
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention for ONNX: its plain MatMul/Softmax pattern is what ONNX Runtime's transformer optimizer fuses
    # into one Attention op (SDPA exports as a pattern it does not recognise).
    model_kwargs = {"attn_implementation": "eager"} if backend.startswith("onnx") else {}
    model = SentenceTransformer(model_path, device="cpu", model_kwargs=model_kwargs).eval()
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_path} has no fast tokenizer; use backend='torch'")
    inputs = [name for name in _MODEL_INPUTS if name in tokenizer.model_input_names]
    if inputs[:2] != ["input_ids", "attention_mask"]:
        raise ValueError(f"{model_path} takes {tokenizer.model_input_names}; use backend='torch'")
    max_len = int(model.max_seq_length or tokenizer.model_max_length)
    sample = tokenizer(["a short memory", "a somewhat longer memory text, so that the sequence axis varies"],
                       padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    example = {name: sample[name] for name in inputs}
    graph = _SentenceGraph(model, inputs).eval()
    with torch.no_grad():
        reference = graph(**example).numpy()
    if backend.startswith("onnx"):
        graph_file = _export_onnx(model, graph, example, out, quantize=backend == "onnx-int8")
    else:
        graph_file = _export_openvino(graph, example, tokenizer, max_len, out, quantize=backend == "openvino-int8")

    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    meta = {
        "format": EXPORT_FORMAT, "backend": backend, "graph": graph_file.name, "inputs": inputs,
        "max_seq_length": max_len, "pad_token_id": int(tokenizer.pad_token_id or 0),
        "dimension": int(reference.shape[1]), "source": str(Path(model_path).resolve()),
        "fingerprint": model_fingerprint(model_path), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Last: a directory with meta.json is complete.
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    check = GraphEncoder(out)
    texts = ["a short memory", "a somewhat longer memory text, so that the sequence axis varies"]
    cosine = float(np.mean(np.sum(check.encode(texts, 8) * _unit(reference), axis=1)))
    if cosine < 0.98:
        raise RuntimeError(f"the exported {backend} graph disagrees with PyTorch (cosine {cosine:.4f})")


def _export_onnx(model: Any, graph: Any, example: dict, out: Path, *, quantize: bool) -> Path:
    """TorchScript export, then ONNX Runtime's BERT fusions (attention, GELU, skip-LayerNorm), then int8 if asked."""
    import torch
    from onnxruntime.transformers import optimizer

    raw, fused = out / "exported.onnx", out / "model.onnx"
    inputs = list(example)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs} | {"sentence_embedding": {0: "batch"}}
    # The TorchScript exporter, not dynamo: the optimizer's fusion patterns are written against its graphs.
    with _quiet_exporters(), torch.no_grad():
        torch.onnx.export(graph, tuple(example.values()), str(raw), input_names=inputs,
                          output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)
    config = model[0].auto_model.config
    with _quiet_exporters():
        # 0 heads / hidden size lets the optimizer read them from the graph when the config does not say.
        optimized = optimizer.optimize_model(str(raw), model_type="bert",
                                             num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                                             hidden_size=int(getattr(config, "hidden_size", 0) or 0), opt_level=1)
        optimized.save_model_to_file(str(fused))
    raw.unlink()
    if not quantize:
        return fused
    int8 = out / "model_int8.onnx"
    quantize_onnx(fused, int8)
    fused.unlink()
    return int8


def _export_openvino(graph: Any, example: dict, tokenizer: Any, max_len: int, out: Path, *, quantize: bool) -> Path:
    """torch.export, converted by OpenVINO; int8 by NNCF static quantisation calibrated on demo texts."""
    import torch

    inputs = list(example)
    batch_dim, seq_dim = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=1, max=max_len)
    shapes = {name: {0: batch_dim, 1: seq_dim} for name in inputs}
    with _quiet_exporters(), torch.no_grad():
        program = torch.export.export(graph, (), kwargs=example, dynamic_shapes=shapes, strict=False)
    block_openvino_telemetry()
    import openvino as ov

    ov_model = ov.convert_model(program)
    if quantize:
        import nncf

        samples = []
        for text in calibration_texts():
            enc = tokenizer([text], truncation=True, max_length=max_len, return_tensors="np")
            samples.append({name: enc[name].astype(np.int64) for name in inputs})
        ov_model = nncf.quantize(ov_model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(samples))
    graph_file = out / "model.xml"
    ov.save_model(ov_model, str(graph_file), compress_to_fp16=False)
    return graph_file


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters log every graph rewrite at INFO and warn about optional ops; one build line is enough."""
    import warnings

    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.export", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sentence_graph_class() -> type:
    import torch

    class SentenceGraph(torch.nn.Module):
        """The whole sentence-transformers module chain as one graph: token ids in, sentence embedding out."""

        def __init__(self, model: Any, inputs: list[str]) -> None:
            super().__init__()
            self.model = model
            self.inputs = inputs

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return self.model(features)["sentence_embedding"]

    return SentenceGraph


def _SentenceGraph(model: Any, inputs: list[str]) -> Any:  # noqa: N802 - a class made on demand (torch is lazy)
    return _sentence_graph_class()(model, inputs)
