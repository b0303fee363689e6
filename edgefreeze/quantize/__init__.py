"""Quantize: every reduced-precision form the pipeline asks for, made from its fp32 form
(int8 with the gate in the loop, fp16 for GPU targets)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.backbones import Backbone
from edgefreeze.context import RunContext
from edgefreeze.export import Exported
from edgefreeze.gate import HeldOut
from edgefreeze.quantize.fallback import GatedQuantizer
from edgefreeze.quantize.fp16 import to_fp16
from edgefreeze.quantize.fusion import Architecture
from edgefreeze.runtime.forms import FP16, ModelForm
from edgefreeze.runtime.inputs import InputEncoder
from edgefreeze.runtime.manifest import QuantizeRecord
from edgefreeze.schema import PipelineSpec, QuantizeSpec
from edgefreeze.tasks import Outputs, Task

__all__ = ["quantize_models"]

PROBE_ROWS = 64  # training examples that rank the segments' sensitivity


def quantize_models(
    exported: Exported,
    spec: PipelineSpec,
    backbone: Backbone,
    task: Task,
    held_out: HeldOut,
    training_inputs: list[Any],
    ctx: RunContext,
) -> tuple[dict[str, list[Path]], dict[str, QuantizeRecord], dict[str, Outputs]]:
    """Write the forms made from another (reduced precision) into the exported forms'
    folder, from their files. Returns each one's files, the manifest's `quantize` record
    and, for int8 forms, their held-out outputs (measured by the fallback, so the gate
    need not run them again). `training_inputs` give the calibration rows of static
    quantization and the fallback's sensitivity probe (never held-out rows)."""
    architecture = Architecture(
        backbone.fusion_type,
        getattr(backbone.model.config, "num_attention_heads", 0),
        backbone.hidden_size,
        backbone.int8_ops,
    )
    models, records, outputs = {}, {}, {}
    for form in (form for form in exported.forms if form.source is not None):
        assert form.source is not None  # the filter above (mypy does not carry it over)
        sources = exported.files[form.source]
        paths = models[form.name] = [exported.folder / name for name in form.files]
        if form.precision == FP16.precision:
            records[form.name] = QuantizeRecord(
                mode=form.precision,
                graphs={path.name: to_fp16(source, path) for source, path in zip(sources, paths)},
            )
            continue
        settings = int8_settings(form, spec.quantize)
        feeds = partial(sample_feeds, training_inputs, held_out.encoder, seed=spec.train.seed)
        quantizer = GatedQuantizer(
            settings=settings,
            architecture=architecture,
            task=task,
            gate=spec.gate,
            held_out=held_out,
            ctx=ctx,
            probe=feeds(PROBE_ROWS),
            calibration=feeds(settings.calibration_rows) if settings.mode == "static" else None,
        )
        records[form.name], outputs[form.name] = quantizer.quantize(form, sources, paths)
    return models, records, outputs


def int8_settings(form: ModelForm, settings: QuantizeSpec) -> QuantizeSpec:
    """The split graphs are quantized dynamically and unfused: fusion patterns are written
    for whole-model exports, and the top's inputs are activations, not token ids."""
    return (
        settings.model_copy(update={"fuse": False, "mode": "dynamic"}) if form.split else settings
    )


def sample_feeds(
    inputs: list[Any], encoder: InputEncoder, rows: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """A seeded sample of training inputs, encoded as the device does, one example per
    feed: static quantization's calibration, and the fallback's sensitivity probe."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(inputs), min(rows, len(inputs)), replace=False)
    return [encoder.encode(inputs[index]) for index in sorted(chosen.tolist())]
