"""A freezing plan: which parts of the model train, decided once and then only read.

A plan kind (top_k, ...) chooses the cache boundary and the modules that train; `make_plan`
applies the choice (requires_grad), checks it, and returns a `FreezePlan` value that
training, the cache keys, warm start, export and the manifest all read. Nothing else
works out the boundary again.

Frozen modules get no gradients and stay in eval mode (dropout off), so the frozen stem is
a pure function of its input: the property the activation cache relies on.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from edgefreeze.backbones import Backbone
from edgefreeze.errors import ConfigError
from edgefreeze.registry import Registry
from edgefreeze.spec import FreezeSpec

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
# What trains is grouped by role; each role's learning rate is a `train:` setting.
LEARNING_RATES = {"top": "lr_top", "head": "lr_head"}


@dataclass(frozen=True)
class Selection:
    """What a plan kind chose: the cache boundary (layers below it form the frozen stem)
    and, per learning-rate role (`LEARNING_RATES`: "top" for encoder layers, "head"), the
    modules that train. Every module that trains must lie above the boundary."""

    boundary: int
    parts: dict[str, list[nn.Module]]


class PlanKind(ABC):
    """A registered way of choosing what trains (see `PLANS`)."""

    config: ClassVar[type[FreezeSpec]]  # the plan's settings under `freeze:`

    @abstractmethod
    def select(self, config: FreezeSpec, backbone: Backbone) -> Selection:
        """Choose; raise ConfigError naming the `freeze.` key when the model cannot take it."""


PLANS: Registry[type[PlanKind]] = Registry("freezing plan")


@dataclass(frozen=True)
class FreezePlan:
    """The decided plan.

    Args:
        config: the pipeline's `freeze:` settings that made it.
        boundary: layers [0, boundary) and the embeddings are the frozen, cached stem.
        depth: layers in the model's stack.
        parts: learning-rate role -> the modules that train.
        top: every module the top runs (layers from the boundary up, and the head),
            trainable or not; the stem's cache key digests everything else.
        kept_rows: leading rows of each example's stem output the top reads (when only
            the head trains, the rows the task's head reads); None: every row.
        trainable_parameters, total_parameters: counts, for people and the manifest.
    """

    config: FreezeSpec
    boundary: int
    depth: int
    parts: dict[str, tuple[nn.Module, ...]]
    top: tuple[nn.Module, ...]
    kept_rows: int | None
    trainable_parameters: int
    total_parameters: int
    trainable_layers: tuple[int, ...]

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters

    def modules(self) -> list[nn.Module]:
        return [module for modules in self.parts.values() for module in modules]

    def set_train_mode(self, model: nn.Module) -> None:
        """Train mode for what trains, eval mode (no dropout) for everything else."""
        model.eval()
        for module in self.modules():
            module.train()

    def parameter_groups(self, model: nn.Module, rates: dict[str, float],
                         weight_decay: float) -> list[dict]:
        """Optimizer groups over trainable parameters only: a learning rate per role
        (`rates`, keyed like LEARNING_RATES), no weight decay on biases and norms."""
        names = {id(p): n for n, p in model.named_parameters()}
        groups = []
        for role, modules in self.parts.items():
            trainable = [p for m in modules for p in m.parameters() if p.requires_grad]
            for decay in (True, False):
                params = [p for p in trainable if names[id(p)].endswith(NO_DECAY) != decay]
                if params:
                    groups.append({"params": params, "lr": rates[role], "name": role,
                                   "weight_decay": weight_decay if decay else 0.0})
        return groups

    def cache_key(self) -> dict[str, Any]:
        """What of the plan decides the cached activations."""
        return {"boundary": self.boundary, "kept_rows": self.kept_rows}

    def settings(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def describe(self) -> str:
        return describe_plan(self.settings())

    def summary(self) -> str:
        return (f"trainable parameters: {self.trainable_parameters:,} of "
                f"{self.total_parameters:,} ({100 * self.trainable_share:.1f} %), "
                f"layers {list(self.trainable_layers)} of {self.depth} + head; plan "
                f"{self.describe()}, cached stem: layers below {self.boundary}")

    def record(self) -> dict[str, Any]:
        """The manifest's `training.freeze`."""
        return {"plan": self.config.plan, "settings": self.settings(),
                "boundary": self.boundary, "trainable_layers": list(self.trainable_layers),
                "trainable_parameters": self.trainable_parameters,
                "total_parameters": self.total_parameters}


def describe_plan(settings: dict[str, Any]) -> str:
    """A plan's settings in one line: `top_k (trainable_layers=2)`."""
    options = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "plan")
    return f"{settings['plan']} ({options})" if options else str(settings["plan"])


def make_plan(config: FreezeSpec, backbone: Backbone) -> FreezePlan:
    """Apply the configured plan to `backbone.model` (requires_grad) and return it."""
    kind = PLANS.get(config.plan)
    if kind is None:
        raise ConfigError(f"freeze.plan: {PLANS.unknown(config.plan)}")
    selection = kind().select(config, backbone)
    unknown = sorted(set(selection.parts) - set(LEARNING_RATES))
    if unknown:
        raise ConfigError(f"freeze.plan: plan {config.plan!r} groups what trains under "
                          f"{unknown}; the roles with a learning rate are "
                          f"{sorted(LEARNING_RATES)}")
    model, stack = backbone.model, backbone.layer_stack()
    model.requires_grad_(False)
    for modules in selection.parts.values():
        for module in modules:
            module.requires_grad_(True)
    stem = [backbone.embedding_module(), *stack[:selection.boundary]]
    if any(p.requires_grad for module in stem for p in module.parameters()):
        raise ConfigError(f"freeze: plan {config.plan!r} trains parameters below its cache "
                          f"boundary (layer {selection.boundary}); the stem must be frozen")
    parameters = list(model.parameters())
    trainable_layers = tuple(i for i, layer in enumerate(stack)
                             if any(p.requires_grad for p in layer.parameters()))
    return FreezePlan(
        config=config, boundary=selection.boundary, depth=backbone.depth,
        parts={role: tuple(modules) for role, modules in selection.parts.items()},
        top=(*stack[selection.boundary:], *backbone.head_modules()),
        kept_rows=backbone.head_rows if selection.boundary == backbone.depth else None,
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        total_parameters=sum(p.numel() for p in parameters),
        trainable_layers=trainable_layers)


def frozen_digest(model: nn.Module) -> str:
    """sha256 over every tensor of the model that does not train (apply the plan first):
    the frozen stem and anything else held fixed, whatever checkpoint or hub revision it
    came from. The activation cache keys on it, and `retrain --from` requires it to match
    (a trained top is only valid on the frozen weights it was trained with)."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    digest = hashlib.sha256()
    state = model.state_dict(keep_vars=True)
    for name in sorted(state):
        tensor = state[name]
        if id(tensor) in trainable:
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
