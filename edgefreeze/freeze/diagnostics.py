"""What a freezing plan does to a model, part by part, and whether gradients flow only
where it says: read by `edgefreeze inspect` and by training's first step."""

from __future__ import annotations

from typing import Any

from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.freeze.plan import FreezePlan
from edgefreeze.schema import TrainSpec


def layer_rows(plan: FreezePlan, backbone: Backbone, train: TrainSpec) -> list[dict[str, Any]]:
    """One row per part of the model, bottom to top: embeddings, each layer, the head's
    modules; with its parameters, what trains, its state, and its learning rate."""
    method = plan.peft.method if plan.peft else None
    trains = {id(p) for p in plan.parameters()}
    first_epoch = {pid: first for first, ids in reversed(plan.stages) for pid in ids}
    parts = [
        ("embeddings", backbone.embedding_module(), None),
        *[(f"layer {i}", layer, i) for i, layer in enumerate(backbone.layer_stack())],
        *[
            (f"head: {path}", module, None)
            for path, module in zip(backbone.head.modules, backbone.head_modules())
        ],
    ]
    rows = []
    for name, module, layer in parts:
        params = list(module.parameters())
        trainable = [p for p in params if id(p) in trains]
        head = name.startswith("head")
        state = (
            "frozen"
            if not trainable
            else method
            if method and not head
            else "trainable"
            if len(trainable) == len(params)
            else "partly trainable"
        )
        rate = None
        if trainable:
            rate = (
                train.lr_head
                if head
                else train.lr_top * train.layer_decay ** (plan.depth - 1 - (layer or 0))
            )
        starts = sorted({first_epoch[id(p)] for p in trainable if id(p) in first_epoch})
        rows.append(
            {
                "part": name,
                "parameters": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in trainable),
                "state": state,
                "from_epoch": starts[0] if starts else (1 if trainable else None),
                "stem": plan.cacheable
                and (
                    layer is None
                    and name == "embeddings"
                    or layer is not None
                    and layer < plan.boundary
                ),
                "learning_rate": rate,
            }
        )
    return rows


def gradient_flow(model: nn.Module, trainable: list[nn.Parameter]) -> dict[str, Any]:
    """After a backward pass: the trainable parameters that got no gradient (off the loss
    path), and the frozen ones that got one (the plan leaks)."""
    names = {id(p): n for n, p in model.named_parameters()}
    meant = {id(p) for p in trainable}
    missing = [names[id(p)] for p in trainable if p.grad is None]
    stray = [n for n, p in model.named_parameters() if p.grad is not None and id(p) not in meant]
    return {"ok": not missing and not stray, "missing": missing, "stray": stray}
