"""ONNX fp32 -> int8 with ONNX Runtime: fuse the transformer graph, then quantize it
dynamically, configured per target CPU.

Fusing first (ONNX Runtime's transformer optimizer: EmbedLayerNormalization, Attention,
SkipLayerNormalization, BiasGelu) lets the quantizer emit QAttention and
QEmbedLayerNormalization kernels instead of dozens of small int8 MatMuls; measured on
the default bundle it is both faster and closer to PyTorch (docs/results.md).
Dynamic quantization needs no calibration data: weights are int8 ahead of time,
activations are scaled per batch at run time. The embedding table is quantized too unless
the pipeline says otherwise, since it is most of a small model's bytes.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from edgefreeze.spec import QuantizeSpec


@dataclass(frozen=True)
class Target:
    """What a CPU family needs from int8 weights.

    `reduce_range` keeps weights to 7 bits, which avoids the saturation of u8 x s8 dot
    products on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI).
    """

    reduce_range: bool
    description: str


TARGETS: dict[str, Target] = {
    "avx512_vnni": Target(reduce_range=False, description="x86 with AVX-512 VNNI (Cascade Lake+)"),
    "avx512": Target(reduce_range=True, description="x86 with AVX-512, no VNNI"),
    "avx2": Target(reduce_range=True, description="x86 with AVX2"),
    "arm64": Target(reduce_range=False, description="64-bit Arm (NEON dot product)"),
}


@dataclass(frozen=True)
class Architecture:
    """What the fusion needs to know of the model."""

    fusion_type: str  # ONNX Runtime optimizer's model_type
    num_heads: int
    hidden_size: int


def quantize_int8(fp32_path: Path, destination: Path, spec: QuantizeSpec,
                  architecture: Architecture, exclude: list[str] | None = None) -> dict:
    """Write the int8 model; return the settings actually applied (for the manifest).

    `exclude` names nodes of the (fused) graph to leave in fp32.
    """
    target = TARGETS[spec.target]
    op_types = ["MatMul", "Attention"]
    if spec.quantize_embeddings:
        op_types += ["Gather", "EmbedLayerNormalization"]
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch, _quiet_root_logger():
        source, fused = fp32_path, {}
        if spec.fuse:
            source = Path(scratch) / "fused.onnx"
            fused = fuse(fp32_path, source, architecture)
        quantize_dynamic(source, destination, op_types_to_quantize=op_types,
                         per_channel=spec.per_channel, reduce_range=target.reduce_range,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
                         extra_options={"MatMulConstBOnly": True,
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"mode": spec.mode, "target": spec.target, **asdict(target),
            "per_channel": spec.per_channel, "op_types": op_types, "weight_type": "int8",
            "fused_operators": fused, "excluded_nodes": exclude or []}


def fuse(source: Path, destination: Path, architecture: Architecture) -> dict[str, int]:
    """Fuse the fp32 graph's transformer blocks; returns the count of each fused op."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type=architecture.fusion_type,
                           num_heads=architecture.num_heads,
                           hidden_size=architecture.hidden_size, opt_level=0)
    model.save_model_to_file(str(destination))
    counts = Counter(node.op_type for node in model.model.graph.node)
    return {op: n for op, n in sorted(counts.items()) if op in FUSED_OPS}


FUSED_OPS = {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu", "LayerNormalization"}


@contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer logs advice on the root logger; keep --quiet quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
