"""`edgefreeze inspect`: what a pipeline's freezing plan does to its model, layer by layer,
and whether gradients flow where the plan says, before anything is trained."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgefreeze.backbones import Backbone, load_model
from edgefreeze.data import load_data
from edgefreeze.freeze.plan import FreezePlan, make_plan
from edgefreeze.spec import Pipeline, TrainSpec
from edgefreeze.tasks import task_for
from edgefreeze.train.features import LiveFeatures


def layer_rows(plan: FreezePlan, backbone: Backbone, train: TrainSpec) -> list[dict[str, Any]]:
    """One row per part of the model, bottom to top: embeddings, each layer, the head's
    modules; with its parameters, what trains, its state, and its learning rate."""
    method = plan.peft.method if plan.peft else None
    trains = {id(p) for p in plan.parameters()}
    first_epoch = {pid: first for first, ids in reversed(plan.stages) for pid in ids}
    parts = [("embeddings", backbone.embedding_module(), None),
             *[(f"layer {i}", layer, i) for i, layer in enumerate(backbone.layer_stack())],
             *[(f"head: {path}", module, None)
               for path, module in zip(backbone.head.modules, backbone.head_modules())]]
    rows = []
    for name, module, layer in parts:
        params = list(module.parameters())
        trainable = [p for p in params if id(p) in trains]
        head = name.startswith("head")
        state = ("frozen" if not trainable
                 else method if method and not head
                 else "trainable" if len(trainable) == len(params) else "partly trainable")
        rate = None
        if trainable:
            rate = train.lr_head if head else \
                train.lr_top * train.layer_decay ** (plan.depth - 1 - (layer or 0))
        starts = sorted({first_epoch[id(p)] for p in trainable if id(p) in first_epoch})
        rows.append({"part": name, "parameters": sum(p.numel() for p in params),
                     "trainable": sum(p.numel() for p in trainable), "state": state,
                     "from_epoch": starts[0] if starts else (1 if trainable else None),
                     "stem": plan.cacheable and (layer is None and name == "embeddings"
                                                 or layer is not None and layer < plan.boundary),
                     "learning_rate": rate})
    return rows


def gradient_flow(model: nn.Module, trainable: list[nn.Parameter]) -> dict[str, Any]:
    """After a backward pass: the trainable parameters that got no gradient (off the loss
    path), and the frozen ones that got one (the plan leaks)."""
    names = {id(p): n for n, p in model.named_parameters()}
    meant = {id(p) for p in trainable}
    missing = [names[id(p)] for p in trainable if p.grad is None]
    stray = [n for n, p in model.named_parameters() if p.grad is not None and id(p) not in meant]
    return {"ok": not missing and not stray, "missing": missing, "stray": stray}


def inspect_pipeline(pipeline: Pipeline) -> dict[str, Any]:
    """The plan's rows and the gradient-flow check on one batch of the pipeline's training
    data (with every stage's parameters unfrozen), without training anything."""
    spec = pipeline.spec
    task = task_for(spec.task)
    data = load_data(spec.data, task, pipeline.resolve)
    loaded = load_model(spec.model, task, data.label_names, pipeline.resolve,
                        spec.trust_remote_code, spec.train.seed, spec.data.max_length)
    plan = make_plan(spec.freeze, loaded.backbone, spec.peft)
    encoded = task.encode(loaded.processor, data.train.inputs[:spec.train.batch_size],
                          spec.data.max_length)
    plan.begin_epoch(loaded.model, max((first for first, _ in plan.stages), default=1))
    indices = list(range(len(encoded)))
    hidden, mask = LiveFeatures(encoded, loaded.backbone, plan).batch(indices, torch.device("cpu"))
    outputs = loaded.backbone.top(hidden, mask, plan.boundary)
    targets = task.aligned_targets(data.train.targets[:len(encoded)], encoded)
    task.loss(outputs, task.batch_targets(targets, indices)).backward()
    return {"pipeline": str(pipeline.path), **plan.record(), "description": plan.describe(),
            "rows": layer_rows(plan, loaded.backbone, spec.train),
            "gradient_flow": gradient_flow(loaded.model, plan.parameters())}
