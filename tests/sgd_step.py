"""One plain-SGD step of the top two MiniLM layers on eight fixed texts, for tests that
compare how a step moves the weights (several processes against one, fp16 against fp32).
With lr 1, each weight's change is its (clipped) gradient."""

from __future__ import annotations

from pathlib import Path

import torch

from edgefreeze.backbones import load_model
from edgefreeze.cache.features import LiveFeatures
from edgefreeze.context.world import World
from edgefreeze.freeze import make_plan
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks.encoding import encode_texts
from edgefreeze.train.loop import NO_SCALING, TopStep
from tests.conftest import TEXT

TEXTS = [
    "a moving, funny film",
    "dull and far too long",
    "wonderful",
    "a mess",
    "the cast is wonderful but the script never finds its footing",
    "see it twice",
    "nothing happens for two hours",
    "sharp, warm and often very funny indeed",
]
TARGETS = torch.tensor([1, 0, 1, 0, 0, 1, 0, 1])

Weights = dict[str, torch.Tensor]


def sgd_step(
    world: World = World(),
    precision: str = "fp32",
    scaler: torch.amp.GradScaler = NO_SCALING,
    max_grad_norm: float = 1e9,
) -> tuple[Weights, Weights]:
    """The trainable weights before and after one step on this process's share of TEXTS,
    in eval mode (no dropout: runs may differ only in how sums are ordered)."""
    loaded = load_model("builtin:all-MiniLM-L6-v2", TEXT, ["neg", "pos"], Path, False, 0)
    loaded.model.eval()
    plan = make_plan(TopKSpec(trainable_layers=2), loaded.backbone)
    features = LiveFeatures(encode_texts(loaded.processor, TEXTS, 32), loaded.backbone, plan)
    indices = list(range(len(TEXTS)))
    mine = world.share(indices)
    batch = (*features.batch(mine, torch.device("cpu")), TARGETS[mine])
    trainable = {n: p for n, p in loaded.model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    step = TopStep(
        loaded.backbone,
        TEXT,
        torch.optim.SGD(trainable.values(), lr=1.0),
        precision,
        max_grad_norm=max_grad_norm,
        world=world,
        scaler=scaler,
    )
    step(plan, batch, share=len(mine) / len(indices))
    return before, {n: p.detach() for n, p in trainable.items()}
