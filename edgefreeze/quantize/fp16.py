"""fp32 -> fp16 for GPU targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx


def to_fp16(fp32_path: Path, destination: Path) -> dict[str, Any]:
    """Half-precision weights and compute (inputs and outputs stay as they are, so the
    same runtime code feeds it)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(destination))
    return {"keep_io_types": True}
