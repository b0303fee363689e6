"""Fuse an fp32 transformer graph before int8 (ONNX Runtime's transformer optimizer).

Fused Attention lets the quantizer emit QAttention kernels instead of dozens of small int8
MatMuls; measured on the default bundle it is faster (docs/benchmarks.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FUSED_OPS = {
    "EmbedLayerNormalization",
    "Attention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "LayerNormalization",
}


@dataclass(frozen=True)
class Architecture:
    """What the fusion and the quantizer need to know of the model."""

    fusion_type: str | None  # ONNX Runtime optimizer's model_type (None: no fusion)
    num_heads: int
    hidden_size: int
    int8_ops: tuple[str, ...] = ("MatMul", "Attention")  # the operators int8 quantizes


def fuse(source: Path, destination: Path, architecture: Architecture) -> dict[str, int]:
    """Fuse the fp32 graph's transformer blocks; returns the count of each fused op."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(architecture.fusion_type)
    # Keep the embeddings as Gather + LayerNormalization: the fused EmbedLayerNormalization
    # would quantize every embedding table at once (see int8.small_tables).
    options.enable_embed_layer_norm = False
    # Keep residual Add + LayerNormalization unfused: ONNX Runtime's CPU
    # SkipLayerNormalization is slower than the pair (see runtime.session), and the
    # projection's bias Add then folds into the int8 MatMul at load time instead.
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    model = optimize_model(
        str(source),
        model_type=architecture.fusion_type,
        num_heads=architecture.num_heads,
        hidden_size=architecture.hidden_size,
        opt_level=0,
        optimization_options=options,
    )
    model.save_model_to_file(str(destination))
    counts = Counter(node.op_type for node in model.model.graph.node)
    return {op: n for op, n in sorted(counts.items()) if op in FUSED_OPS}
