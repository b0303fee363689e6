"""The CPUs an int8 model is quantized for (`quantize.target`), and what each needs from
its int8 weights.

The settings follow ONNX Runtime's guidance on its u8/s8 kernels ("Quantize ONNX models",
data type selection):
- x86 without VNNI multiplies u8 activations by s8 weights with VPMADDUBSW, whose 16-bit
  sums can saturate. AVX-512 keeps s8 weights and reduces them to 7 bits
  (`reduce_range`, which Optimum's docs also advise for AVX-512 without VNNI); AVX2 takes
  u8 weights instead, as Optimum's avx2 preset does (u8 x u8 has no such saturation).
- AVX-512 VNNI (VPDPBUSD) and 64-bit Arm (NEON dot product) sum in 32 bits: full-range s8
  weights, as Optimum's avx512_vnni and arm64 presets have. Their int8 files are
  therefore identical; only the kernels that run them differ, on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    weight_type: Literal["int8", "uint8"]
    reduce_range: bool  # 7-bit weights
    description: str


TARGETS: dict[str, Target] = {
    "avx512_vnni": Target("int8", False, "x86 with AVX-512 VNNI (Cascade Lake and later)"),
    "avx512": Target("int8", True, "x86 with AVX-512, no VNNI (Skylake-SP)"),
    "avx2": Target("uint8", False, "x86 with AVX2"),
    "arm64": Target("int8", False, "64-bit Arm (NEON dot product)"),
}
