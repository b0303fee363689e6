"""`edgefreeze inspect`: what a pipeline's freezing plan does to its model, layer by layer,
and whether gradients flow where the plan says, before anything is trained."""

from __future__ import annotations

from typing import Any

import torch

from edgefreeze.cache.features import LiveFeatures
from edgefreeze.data import load_data
from edgefreeze.freeze import make_plan
from edgefreeze.freeze.diagnostics import gradient_flow, layer_rows
from edgefreeze.recipes.build import load_pipeline_model
from edgefreeze.schema import Pipeline
from edgefreeze.tasks import task_for


def inspect_pipeline(pipeline: Pipeline) -> dict[str, Any]:
    """The plan's rows and the gradient-flow check on one batch of the pipeline's training
    data (with every stage's parameters unfrozen), without training anything."""
    spec = pipeline.spec
    task = task_for(spec.task)
    data = load_data(spec.data, task, pipeline.resolve)
    loaded = load_pipeline_model(pipeline, task, data.label_names)
    plan = make_plan(spec.freeze, loaded.backbone, spec.peft)
    encoded = task.encode(
        loaded.processor, data.train.inputs[: spec.train.batch_size], spec.data.max_length
    )
    plan.begin_epoch(loaded.model, max((first for first, _ in plan.stages), default=1))
    indices = list(range(len(encoded)))
    hidden, mask = LiveFeatures(encoded, loaded.backbone, plan).batch(indices, torch.device("cpu"))
    outputs = loaded.backbone.top(hidden, mask, plan.boundary)
    targets = task.aligned_targets(data.train.targets[: len(encoded)], encoded)
    loss = task.loss(outputs, task.batch_targets(targets, indices))
    loss.backward()  # type: ignore[no-untyped-call]
    return {
        "pipeline": str(pipeline.path),
        **plan.record().model_dump(mode="json"),
        "description": plan.describe(),
        "rows": layer_rows(plan, loaded.backbone, spec.train),
        "gradient_flow": gradient_flow(loaded.model, plan.parameters()),
    }
