"""Dynamic int8 quantisation of an exported ONNX sentence-embedding graph, keeping the error-prone layers fp32."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


def quantize_onnx(fp32: Path, int8: Path) -> None:
    """Dynamic int8: weights int8 per output channel, activations uint8 per batch, for the MatMuls with constant
    weights, except each layer's feed-forward output projection. Its input comes straight from GELU, whose range
    is the widest in the layer; quantising it costs most of the error (mean cosine to fp32 0.992 -> 0.996 on demo
    texts when it stays fp32) for a third of the linear work. Embedding tables stay fp32 too (no speed to gain)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32), load_external_data=False)
    constants = {init.name for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    keep_fp32 = [node.name for node in model.graph.node
                 if node.op_type == "MatMul" and node.input[1] in constants
                 and _after_gelu(producers.get(node.input[0]), producers)]
    # It logs advice about static-quantisation pre-processing on the root logger; not relevant to dynamic int8.
    advice = _DropMessages("Please consider to run pre-processing")
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=keep_fp32)
    finally:
        logging.getLogger().removeFilter(advice)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _after_gelu(node: Any, producers: dict[str, Any], depth: int = 3) -> bool:
    """Whether `node` is a GELU or reaches one within `depth` shape-only/elementwise steps upstream."""
    for _ in range(depth):
        if node is None:
            return False
        if node.op_type in ("Gelu", "FastGelu", "BiasGelu"):
            return True
        if node.op_type not in ("Mul", "Add", "Reshape", "Cast", "Identity"):
            return False
        node = producers.get(node.input[0])
    return False
