"""ONNX fp32 -> int8 with ONNX Runtime's dynamic quantizer, configured per target CPU.

Dynamic quantization needs no calibration data: weights are int8 ahead of time,
activations are scaled per batch at run time. The embedding table (Gather) is quantized
too unless the pipeline says otherwise, since it is most of a small model's bytes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

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


def quantize_int8(fp32_path: Path, destination: Path, spec: QuantizeSpec) -> dict[str, object]:
    """Write the int8 model; return the settings actually applied (for the manifest)."""
    target = TARGETS[spec.target]
    op_types = ["MatMul", "Attention"] + (["Gather"] if spec.quantize_embeddings else [])
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice: measured, no gain
    try:
        quantize_dynamic(fp32_path, destination, op_types_to_quantize=op_types,
                         per_channel=spec.per_channel, reduce_range=target.reduce_range,
                         weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    return {"mode": spec.mode, "target": spec.target, **asdict(target),
            "per_channel": spec.per_channel, "op_types": op_types, "weight_type": "int8"}
