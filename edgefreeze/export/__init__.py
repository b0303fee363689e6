"""Export: the trained model as fp32 ONNX (every exact form the pipeline asks for), and the
files a device needs beside it."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from edgefreeze.backbones import LoadedModel
from edgefreeze.export.onnx import export_onnx, export_split
from edgefreeze.freeze import FreezePlan
from edgefreeze.runtime.bundle import LABELS
from edgefreeze.runtime.forms import ModelForm
from edgefreeze.tasks import Task
from edgefreeze.tasks.encoding import TOKEN_INPUTS

__all__ = ["export_models", "write_model_files"]


def merged(loaded: LoadedModel, plan: FreezePlan) -> LoadedModel:
    """The model as it ships: with the plan's method merged into a copy of its weights."""
    if plan.peft is None:
        return loaded
    from edgefreeze.peft import METHODS

    model = copy.deepcopy(loaded.model)
    METHODS.get(plan.peft.method)().merge(model)
    return dataclasses.replace(loaded, model=model, backbone=loaded.backbone.on(model))


def write_model_files(loaded: LoadedModel, label_names: list[str], folder: Path) -> None:
    """The tokenizer, the Hugging Face config (naming the trained architecture, as
    `save_pretrained` of a model does) and the label map."""
    loaded.tokenizer.save_pretrained(folder)
    config = copy.deepcopy(loaded.model.config)
    config.architectures = [type(loaded.model).__name__]
    config.save_pretrained(folder)
    (folder / LABELS).write_text(
        json.dumps({"id2label": dict(enumerate(label_names))}, indent=2))


def export_models(loaded: LoadedModel, plan: FreezePlan, task: Task, forms: list[ModelForm],
                  folder: Path, opset: int) -> tuple[dict[str, list[Path]], dict[str, dict]]:
    """Write the exported (fp32) ones of `forms` into `folder`: the whole model with
    Optimum's exporter, the stem + top pair with torch's. Returns each one's files and the
    manifest's `export` record. A parameter-efficient method's weights are merged first,
    into a copy: the trained model itself stays as it is, the reference the gate checks
    the export against."""
    loaded = merged(loaded, plan)
    models, records = {}, {}
    for form in (form for form in forms if form.source is None):
        paths = models[form.name] = [folder / name for name in form.files]
        if form.split:
            input_names = [n for n in TOKEN_INPUTS if n in loaded.tokenizer.model_input_names]
            records[form.name] = export_split(loaded.backbone, plan, input_names, *paths, opset)
        else:
            records[form.name] = export_onnx(loaded.model, paths[0], opset, task.export_task)
    return models, records
