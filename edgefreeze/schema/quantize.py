"""`export:` and `quantize:`: the ONNX graphs written and how int8 is made of them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgefreeze.schema.section import Section
from edgefreeze.schema.targets import TARGETS


class ExportSpec(Section):
    opset: int = Field(18, ge=14, le=23, description="ONNX opset of the exported graphs")
    split: bool = Field(False, description="also export stem.onnx + top.onnx for delta updates")


class QuantizeSpec(Section):
    mode: Literal["dynamic", "static"] = Field(
        "dynamic",
        description="dynamic: activation scales per batch at run time; static: "
        "scales calibrated ahead of time (QDQ, unfused; the split graphs stay dynamic)",
    )
    calibration_rows: int = Field(
        256, ge=1, le=100000, description="training examples that calibrate static mode"
    )
    target: str = Field(
        "avx512_vnni",
        description="the CPU family the int8 weights are for (edgefreeze.schema.targets)",
    )
    per_channel: bool = Field(True, description="one scale per output channel of each weight")
    quantize_embeddings: bool = Field(
        True,
        description="int8 embedding tables (Gather) too; "
        "false keeps about half a small model's bytes fp32, so "
        "raise gate.max_int8_size_share with it",
    )
    fuse: bool = Field(True, description="fuse attention, layer norms and GELU before quantizing")
    fp16: bool = Field(
        False, description="also write model.fp16.onnx for GPU targets (gated like int8)"
    )
    fallback_order: Literal["sensitivity", "from_output"] = Field(
        "sensitivity",
        description="which segment an int8 model that fails the gate keeps in "
        "fp32 next: the one whose quantization alone errs most (measured), or the next "
        "from the output down (head, top layer, ...)",
    )

    @field_validator("target")
    @classmethod
    def _known_target(cls, target: str) -> str:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
        return target
