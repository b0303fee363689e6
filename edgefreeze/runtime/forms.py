"""The model forms a bundle can carry: one table, read by the build, the gate, the report,
the device runtime and the command line. A form's name is how the manifest keys its
metrics, sizes and gate rules, and what `predict --model` and `bench` take.

Standard library only (the device runtime reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Precision = Literal["fp32", "int8", "fp16"]

REFERENCE = "pytorch"  # the model every form is measured against (metrics key)


@dataclass(frozen=True)
class ModelForm:
    """One way the trained model ships.

    Args:
        name: the key of everything about this form (manifest, CLI, gate rules).
        files: the bundle files, in the order the runtime runs them (a stem, then a top).
        precision: fp32 forms are checked for exactness against PyTorch (logit error over
            the held-out rows and a grid of unseen shapes); int8 and fp16 forms for how
            much of the task metric and agreement they lose.
        source: the fp32 form a reduced-precision form is made from.
        option: the pipeline setting (dotted key) that asks for the form; None: always.
        label: what people read in reports.
    """

    name: str
    files: tuple[str, ...]
    precision: Precision
    source: str | None
    option: str | None
    label: str

    @property
    def split(self) -> bool:
        """Stem and top as two graphs: the delta-update form."""
        return len(self.files) > 1

    @property
    def exact(self) -> bool:
        return self.precision == "fp32"


FP32 = ModelForm("fp32", ("model.onnx",), "fp32", None, None, "ONNX fp32")
INT8 = ModelForm("int8", ("model.int8.onnx",), "int8", "fp32", None, "ONNX int8")
FP16 = ModelForm(
    "fp16", ("model.fp16.onnx",), "fp16", "fp32", "quantize.fp16", "ONNX fp16 (GPU targets)"
)
SPLIT_FP32 = ModelForm(
    "split-fp32", ("stem.onnx", "top.onnx"), "fp32", None, "export.split", "ONNX stem + top fp32"
)
SPLIT_INT8 = ModelForm(
    "split-int8",
    ("stem.int8.onnx", "top.int8.onnx"),
    "int8",
    "split-fp32",
    "export.split",
    "ONNX stem + top int8",
)

# In the order people read them; a build makes each form's `source` before the form.
FORMS: dict[str, ModelForm] = {
    form.name: form for form in (INT8, FP32, SPLIT_INT8, SPLIT_FP32, FP16)
}


def requested(settings: Mapping[str, Any]) -> list[ModelForm]:
    """The forms a pipeline's settings (as the manifest records them) ask for: those
    always built, and those whose `option` is on."""

    def on(dotted: str) -> bool:
        value: Any = settings
        for part in dotted.split("."):
            value = value[part]
        return bool(value)

    return [form for form in FORMS.values() if form.option is None or on(form.option)]
