"""Export: the trained model as fp32 ONNX (every exact form the pipeline asks for), and the
files a device needs beside it."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from edgefreeze.backbones import LoadedModel, hf_config
from edgefreeze.export.onnx import export_onnx, export_split
from edgefreeze.freeze import FreezePlan
from edgefreeze.runtime.bundle import LABELS
from edgefreeze.runtime.forms import ModelForm
from edgefreeze.runtime.manifest import ExportRecord
from edgefreeze.tasks import Task
from edgefreeze.tasks.encoding import TOKEN_INPUTS, ModelInputs

__all__ = ["Exported", "export_models", "write_model_files"]


def merged(loaded: LoadedModel, plan: FreezePlan) -> LoadedModel:
    """The model as it ships: with the plan's method merged into a copy of its weights."""
    if plan.peft is None:
        return loaded
    from edgefreeze.peft import METHODS

    model = copy.deepcopy(loaded.model)
    method = METHODS.get(plan.peft.method)
    assert method is not None  # the plan attached it: a registered method
    method().merge(model)
    return dataclasses.replace(loaded, model=model, backbone=loaded.backbone.on(model))


def _example(loaded: LoadedModel, encoded: ModelInputs) -> dict[str, torch.Tensor]:
    """What the split export traces: for tokens, a batch of 2 x 16 ones of each input the
    model takes (real token lengths could be too short for the sequence axis); for
    images, two real images' pixels."""
    if encoded.sequential:
        assert isinstance(loaded.processor, PreTrainedTokenizerBase)  # tokens: a tokenizer
        return {
            name: torch.ones(2, 16, dtype=torch.long)
            for name in TOKEN_INPUTS
            if name in loaded.processor.model_input_names
        }
    return {
        name: torch.from_numpy(values)
        for name, values in encoded.batch([0, min(1, len(encoded) - 1)]).items()
    }


def write_model_files(loaded: LoadedModel, label_names: list[str], folder: Path) -> None:
    """The tokenizer or image processor, the Hugging Face config (naming the trained
    architecture, as `save_pretrained` of a model does) and the label map."""
    loaded.processor.save_pretrained(folder)
    config = copy.deepcopy(hf_config(loaded.model))
    config.architectures = [type(loaded.model).__name__]
    config.save_pretrained(folder)
    (folder / LABELS).write_text(json.dumps({"id2label": dict(enumerate(label_names))}, indent=2))


@dataclass(frozen=True)
class Exported:
    """The exported (fp32) forms in a folder, and what the quantizers make of them."""

    folder: Path
    forms: list[ModelForm]  # every form the pipeline asks for, exported or reduced
    files: dict[str, list[Path]]  # per exported form
    records: dict[str, ExportRecord]  # per exported form: the manifest's `export`


def export_models(
    loaded: LoadedModel,
    plan: FreezePlan,
    task: Task,
    forms: list[ModelForm],
    folder: Path,
    opset: int,
    encoded: ModelInputs,
) -> Exported:
    """Write the exported (fp32) ones of `forms` into `folder`: the whole model with
    Optimum's exporter, the stem + top pair with torch's (traced on `encoded`'s inputs).
    A parameter-efficient method's weights are merged first, into a copy: the trained
    model itself stays as it is, the reference the gate checks the export against."""
    loaded = merged(loaded, plan)
    files, records = {}, {}
    for form in (form for form in forms if form.source is None):
        paths = files[form.name] = [folder / name for name in form.files]
        if form.split:
            stem_path, top_path = paths  # a split form's two files
            records[form.name] = export_split(
                loaded.backbone,
                plan,
                _example(loaded, encoded),
                encoded.sequential,
                stem_path,
                top_path,
                opset,
            )
        else:
            records[form.name] = export_onnx(
                loaded.model, paths[0], opset, task.export_task, encoded.sequential
            )
    return Exported(folder=folder, forms=forms, files=files, records=records)
