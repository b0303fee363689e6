"""ONNX fp32 -> int8 with ONNX Runtime, configured per target CPU
(`edgefreeze.schema.targets`): fuse the transformer graph (`fusion`) and quantize it
dynamically (the default), or quantize it statically with activation ranges calibrated
on training examples.

Dynamic quantization needs no calibration data: weights are int8 ahead of time,
activations are scaled per batch at run time. Static quantization (QDQ format, unfused)
fixes activation scales ahead of time from `calibration_rows` training examples. The
embedding table is quantized too unless the pipeline says otherwise, since it is most of
a small model's bytes.
"""

from __future__ import annotations

import gc
import logging
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from edgefreeze.quantize.fusion import Architecture, fuse
from edgefreeze.schema import QuantizeSpec
from edgefreeze.schema.targets import TARGETS

WEIGHT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
NORM_OPS = {
    "LayerNormalization",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
}


def quantize_int8(
    fp32_path: Path,
    destination: Path,
    settings: QuantizeSpec,
    architecture: Architecture,
    keep_fp32: Collection[str] = (),
    calibration: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Write the int8 model; return the settings actually applied (for the manifest),
    with the graph's segment names (`segments`, from the output down).

    `keep_fp32` names the segments (see `segments`) left in fp32. `calibration` (model
    input feeds) is required for static mode.
    """
    target = TARGETS[settings.target]
    if "Conv" in architecture.int8_ops:
        # Older ONNX Runtimes lack ConvInteger with s8 weights (1.20.1 refuses to load
        # the model; 1.32 runs it); u8 x u8 has no saturation issue either.
        target = replace(target, weight_type="uint8")
    op_types = [*architecture.int8_ops] + (["Gather"] if settings.quantize_embeddings else [])
    static = settings.mode == "static"
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch, _quiet_root_logger():
        source, fused = fp32_path, {}
        if settings.fuse and not static and architecture.fusion_type is not None:
            source = Path(scratch) / "fused.onnx"
            fused = fuse(fp32_path, source, architecture)
        graph = onnx.load(str(source), load_external_data=False)
        parts = segments(graph)
        kept = [(name, dict(parts)[name]) for name in keep_fp32]  # in the order asked
        common = {
            "op_types_to_quantize": op_types,
            "per_channel": settings.per_channel,
            "reduce_range": target.reduce_range,
            "weight_type": WEIGHT_TYPES[target.weight_type],
            "nodes_to_exclude": [node for _, nodes in kept for node in nodes] + small_tables(graph),
            "extra_options": {
                "MatMulConstBOnly": True,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        }
        if static:
            inputs = {i.name for i in graph.graph.input}
            quantize_static(
                source,
                destination,
                _Feeds(calibration or [], inputs),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                **common,
            )
        else:
            quantize_dynamic(source, destination, **common)
    # ONNX Runtime's quantizer leaves copies of the model in reference cycles, which only
    # a full collection frees: without this, the fallback's attempts on the 90 MB default
    # model held 280 MB more each (3 GB over a ranking and six attempts).
    gc.collect()
    return {
        "mode": settings.mode,
        "target": settings.target,
        **asdict(target),
        "per_channel": settings.per_channel,
        "op_types": op_types,
        "fused_operators": fused,
        "fp32_segments": [name for name, _ in kept],
        "segments": [name for name, _ in parts],
    }


def small_tables(model: onnx.ModelProto) -> list[str]:
    """Gather nodes of every constant table but the largest. The word-embedding table is
    most of a small model's bytes and takes int8 well; position and token-type tables
    are tiny and quantizing them cost accuracy (measured: 80.43 % against 79.66 % with all
    tables int8 on the default model, sizes 23.6 and 23.0 MB)."""
    constants = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    tables = {
        n.name: constants[n.input[0]]
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in constants
    }
    largest = max(tables, key=tables.__getitem__, default=None)
    return [name for name in tables if name != largest]


def segments(model: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """The graph's nodes grouped from the output backwards: the head (everything after
    the last layer norm), then each transformer layer (two norms per layer, fused or
    not), top layer first: the units the gate's fallback keeps in fp32."""
    nodes = list(model.graph.node)
    norms = [i for i, node in enumerate(nodes) if node.op_type in NORM_OPS]
    if not norms:
        return [("head", [n.name for n in nodes])]
    parts = [("head", [n.name for n in nodes[norms[-1] + 1 :]])]
    end, layer = norms[-1] + 1, 1
    while len(norms) >= 2 * layer:
        start = norms[-2 * layer - 1] + 1 if len(norms) > 2 * layer else 0
        parts.append(
            ("last layer" if layer == 1 else f"layer -{layer}", [n.name for n in nodes[start:end]])
        )
        end, layer = start, layer + 1
    return parts


class _Feeds(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no stubs
    """Calibration examples for ONNX Runtime's static quantizer, one feed at a time."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], inputs: set[str]) -> None:
        self.feeds = ({k: v for k, v in feed.items() if k in inputs} for feed in feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger; keep --quiet quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
