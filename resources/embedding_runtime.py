"""Exported sentence-embedding graphs at run time: ONNX Runtime or OpenVINO behind the model's fast tokenizer."""

from __future__ import annotations

import json
import os
import queue
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# Exported graphs run at most this many texts per batch, whatever `batch_size` says (it is sized for torch and
# GPUs): on CPU, small batches waste less on padding and keep every worker busy. On 2 cores, batches of 16 instead
# of 64 took onnx-int8 from 1.1x to 1.9x PyTorch fp32 (torch itself gains under 1.1x from smaller batches).
GRAPH_MAX_BATCH = 16


class GraphEncoder:
    """An exported sentence-embedding graph (ONNX Runtime or OpenVINO) behind the model's own fast tokenizer.

    Batches run on `workers` inference requests at once, each with its share of the cores: on a small machine
    two single-threaded requests beat one two-threaded request, which synchronises its threads at every operator
    (and stalls whenever another process holds one of the cores)."""

    def __init__(self, directory: Path, *, workers: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.directory = directory
        meta = json.loads((directory / "meta.json").read_text())
        self.backend: str = meta["backend"]
        self.dimension: int = int(meta["dimension"])
        self._inputs: list[str] = list(meta["inputs"])
        self._pad_id: int = int(meta["pad_token_id"])
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=int(meta["max_seq_length"]))
        cores = os.cpu_count() or 1
        self.workers = max(1, workers if workers is not None else min(cores, 2))
        self._runners: queue.SimpleQueue = queue.SimpleQueue()
        for runner in _open_runtime(directory / meta["graph"], self.backend, self.workers,
                                    max(1, cores // self.workers)):
            self._runners.put(runner)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed") if self.workers > 1 else None

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Longest first, like sentence-transformers: batches of similar length waste little on padding.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        size = max(min(batch_size, GRAPH_MAX_BATCH), 1)
        batches = [order[start:start + size] for start in range(0, len(order), size)]

        def run(rows: np.ndarray) -> None:
            width = int(lengths[rows].max())
            feeds = {name: np.zeros((len(rows), width), dtype=np.int64) for name in self._inputs}
            feeds["input_ids"].fill(self._pad_id)
            for r, i in enumerate(rows):
                enc = encodings[i]
                n = len(enc.ids)
                feeds["input_ids"][r, :n] = enc.ids
                feeds["attention_mask"][r, :n] = enc.attention_mask
                if "token_type_ids" in feeds:
                    feeds["token_type_ids"][r, :n] = enc.type_ids
            runner = self._runners.get()  # a request is used by one thread at a time
            try:
                out[rows] = runner(feeds)
            finally:
                self._runners.put(runner)

        if self._pool is None or len(batches) == 1:
            for rows in batches:
                run(rows)
        else:
            for future in [self._pool.submit(run, rows) for rows in batches]:
                future.result()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def block_openvino_telemetry() -> None:
    """OpenVINO's converter and NNCF report usage to an analytics service unless opted out; a memory service must
    not phone home, so this process makes `openvino_telemetry` unimportable and both fall back to their stubs."""
    if os.environ.get("AMEM_OPENVINO_TELEMETRY") != "1":
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def _open_runtime(graph: Path, backend: str, requests: int, threads: int) -> list[Any]:
    """`requests` callables feeds -> sentence embeddings, each to be used by one thread at a time."""
    if backend.startswith("openvino"):
        block_openvino_telemetry()
        import openvino as ov

        compiled = ov.Core().compile_model(str(graph), "CPU", {
            "NUM_STREAMS": requests, "INFERENCE_NUM_THREADS": requests * threads,
            # fp32 arithmetic everywhere the graph is not int8: bf16/fp16 defaults on newer CPUs would move the
            # vectors away from the reference ones.
            "INFERENCE_PRECISION_HINT": "f32",
        })
        output = compiled.output(0)

        def infer_with(request: Any) -> Any:
            return lambda feeds: request.infer(feeds)[output].copy()

        return [infer_with(compiled.create_infer_request()) for _ in range(requests)]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Worker threads sleep instead of spinning between operators: on a shared node (other pods, other processes)
    # spinning threads steal the cores the next operator needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # One session serves concurrent runs (ONNX Runtime's run is thread-safe), so the weights are loaded once.
    session = ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])
    return [lambda feeds: session.run(None, feeds)[0]] * requests
