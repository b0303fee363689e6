"""The CPUs an int8 model is quantized for, and what each needs from its int8 weights.

The settings follow ONNX Runtime's guidance on u8/s8 kernels, which Optimum's presets
(`AutoQuantizationConfig.arm64/avx2/avx512/avx512_vnni`) also encode:
- x86 without VNNI multiplies u8 activations by s8 weights with VPMADDUBSW, whose 16-bit
  sums can saturate. AVX-512 keeps s8 weights and reduces them to 7 bits
  (`reduce_range`); AVX2 takes u8 weights instead (u8 x u8 runs on a path without that
  saturation, Optimum's avx2 preset).
- AVX-512 VNNI (VPDPBUSD) and 64-bit Arm (NEON dot product) sum in 32 bits: full-range s8
  weights. Their int8 files are therefore identical; only the kernels that run them
  differ, on the device.
Standard library only: the pipeline schema validates `quantize.target` against this table.
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
