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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from edgefreeze.backbones import Backbone, LoadedModel, hf_config
from edgefreeze.errors import ConfigError
from edgefreeze.runtime.manifest import FreezeRecord, ModelRecord
from edgefreeze.schema import PLAN_SETTINGS, FreezeSpec, PeftSpec
from edgefreeze.schema.section import KindRegistry

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
# What trains is grouped by role; each role's learning rate is a `train:` setting.
LEARNING_RATES = {"top": "lr_top", "head": "lr_head"}


Trainable = nn.Module | nn.Parameter  # a module trains all its parameters
Spec = TypeVar("Spec", bound=FreezeSpec)  # a plan kind's own settings class


@dataclass(frozen=True)
class Selection:
    """What a plan kind chose: the cache boundary (layers below it, with the embeddings,
    form the frozen stem) and, per learning-rate role (`LEARNING_RATES`: "top" for what is
    in the encoder, "head"), what trains. Nothing in a layer below the boundary may train;
    the embeddings may, with a boundary of 0 (then there is no frozen stem to cache).

    `stages` schedules it: (first epoch, what trains from then on), the first from epoch
    1; empty means everything in `parts` trains from the start."""

    boundary: int
    parts: Mapping[str, Sequence[Trainable]]
    stages: Sequence[tuple[int, Sequence[Trainable]]] = field(default_factory=list)


class PlanKind(ABC, Generic[Spec]):
    """A registered way of choosing what trains (see `PLANS`), generic in its settings."""

    config: ClassVar[type[FreezeSpec]]  # the plan's settings under `freeze:`
    adaptive: ClassVar[bool] = False  # moves its boundary during training (see `advance`)

    @abstractmethod
    def select(self, config: Spec, backbone: Backbone) -> Selection:
        """Choose; raise ConfigError naming the `freeze.` key when the model cannot take it."""

    def advance(self, plan: FreezePlan, norms: list[dict[int, float]]) -> tuple[int, str] | None:
        """After an epoch of an adaptive plan: a higher boundary and why, or None to go on
        as it is. `norms` holds, per epoch so far, each trainable layer's mean gradient
        norm per step."""
        return None


PLANS: KindRegistry[type[PlanKind[Any]]] = KindRegistry("freezing plan", PLAN_SETTINGS)


@dataclass(frozen=True)
class FreezePlan:
    """The decided plan.

    Args:
        config: the pipeline's `freeze:` settings that made it.
        peft: its `peft:` settings, when a parameter-efficient method trains in place of
            the plan's layers.
        boundary: layers [0, boundary) and the embeddings are the frozen stem.
        cacheable: whether that stem is frozen and worth caching (it is not when the
            embeddings train, or when only they lie below the boundary).
        depth: layers in the model's stack.
        layers: the model's layer stack (what "layer i" means in rates and reports).
        parts: learning-rate role -> the parameters that train (in any stage).
        stages: (first epoch, ids of the parameters training from then on); empty: all.
        top: every module the top runs (the embeddings when they train, layers from the
            boundary up, and the head), trainable or not.
        kept_rows: leading rows of each example's stem output the top reads (when only
            the head trains, the rows the task's head reads); None: every row.
        trainable_parameters, total_parameters: counts, for people and the manifest.
        trainable_layers: layers with a parameter that trains (in any stage).
        kind: the plan kind that made it (adaptive kinds move the boundary in training).
        moves: where an adaptive plan moved its boundary, and why, epoch by epoch.
    """

    config: FreezeSpec
    peft: PeftSpec | None
    boundary: int
    cacheable: bool
    depth: int
    layers: tuple[nn.Module, ...]
    parts: dict[str, tuple[nn.Parameter, ...]]
    stages: tuple[tuple[int, frozenset[int]], ...]
    top: tuple[nn.Module, ...]
    kept_rows: int | None
    trainable_parameters: int
    total_parameters: int
    trainable_layers: tuple[int, ...]
    kind: PlanKind[Any]
    moves: tuple[dict[str, Any], ...] = ()

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters

    def parameters(self) -> list[nn.Parameter]:
        """Everything that trains in some stage, role by role."""
        return [p for params in self.parts.values() for p in params]

    def begin_epoch(self, model: nn.Module, epoch: int) -> None:
        """Make what trains in `epoch` (1-based) require gradients, and put what trains in
        train mode and everything else in eval mode (no dropout)."""
        if self.stages:
            active = next(ids for first, ids in reversed(self.stages) if first <= epoch)
            for p in self.parameters():
                p.requires_grad_(id(p) in active)
        model.eval()
        for module in self.top:
            if any(p.requires_grad for p in module.parameters()):
                module.train()

    def parameter_groups(
        self,
        model: nn.Module,
        rates: dict[str, float],
        weight_decay: float,
        layer_decay: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Optimizer groups over what trains: a learning rate per role (`rates`, keyed like
        LEARNING_RATES), scaled by `layer_decay` per layer below the top (discriminative
        rates; 1.0: one rate per role), and no weight decay on biases and norms."""
        names = {id(p): n for n, p in model.named_parameters()}
        layer_of = {id(p): i for i, layer in enumerate(self.layers) for p in layer.parameters()}
        groups = []
        for role, params in self.parts.items():
            by_layer: dict[int | None, list[nn.Parameter]] = {}
            for p in params:
                layer = layer_of.get(id(p)) if layer_decay != 1.0 else None
                by_layer.setdefault(layer, []).append(p)
            for layer, members in by_layer.items():
                scale = 1.0 if layer is None else layer_decay ** (self.depth - 1 - layer)
                name = role if layer is None else f"{role}.{layer}"
                for decay in (True, False):
                    chosen = [p for p in members if names[id(p)].endswith(NO_DECAY) != decay]
                    if chosen:
                        groups.append(
                            {
                                "params": chosen,
                                "lr": rates[role] * scale,
                                "name": name,
                                "weight_decay": weight_decay if decay else 0.0,
                            }
                        )
        return groups

    def frozen_below(self, boundary: int, epoch: int, why: str) -> FreezePlan:
        """This plan with the layers under `boundary` frozen too (an adaptive plan's move
        after `epoch`): they stop training and become part of the stem."""
        frozen = self.layers[self.boundary : boundary]
        for layer in frozen:
            layer.requires_grad_(False)
        dropped = {id(p) for layer in frozen for p in layer.parameters()}
        parts = {
            role: tuple(p for p in params if id(p) not in dropped)
            for role, params in self.parts.items()
        }
        return replace(
            self,
            boundary=boundary,
            parts=parts,
            top=tuple(m for m in self.top if all(m is not layer for layer in frozen)),
            trainable_parameters=sum(p.numel() for params in parts.values() for p in params),
            trainable_layers=tuple(i for i in self.trainable_layers if i >= boundary),
            moves=(*self.moves, {"epoch": epoch, "boundary": boundary, "why": why}),
        )

    def cache_key(self) -> dict[str, Any]:
        """What of the plan decides the cached activations."""
        return {"boundary": self.boundary, "kept_rows": self.kept_rows}

    def settings(self) -> dict[str, Any]:
        """The plan's settings (with the method's under `peft`, if one is used)."""
        settings = self.config.model_dump(mode="json")
        return {**settings, "peft": self.peft.model_dump(mode="json")} if self.peft else settings

    def describe(self) -> str:
        return describe_plan(self.settings())

    def summary(self) -> str:
        stem = (
            f"cached stem: layers below {self.boundary}"
            if self.cacheable
            else "no frozen stem to cache"
        )
        return (
            f"trainable parameters: {self.trainable_parameters:,} of "
            f"{self.total_parameters:,} ({100 * self.trainable_share:.1f} %), "
            f"layers {list(self.trainable_layers)} of {self.depth} + head; plan "
            f"{self.describe()}, {stem}"
        )

    def record(self) -> FreezeRecord:
        """The manifest's `training.freeze`."""
        return FreezeRecord(
            plan=self.config.plan,
            settings=self.settings(),
            boundary=self.boundary,
            cacheable=self.cacheable,
            trainable_layers=list(self.trainable_layers),
            trainable_parameters=self.trainable_parameters,
            total_parameters=self.total_parameters,
            moves=list(self.moves),
        )


def _check_stem(plan: str, selection: Selection, backbone: Backbone) -> bool:
    """Nothing below the boundary trains, and the embeddings only with a boundary of 0;
    whether they train."""
    below = [
        p for layer in backbone.layer_stack()[: selection.boundary] for p in layer.parameters()
    ]
    if any(p.requires_grad for p in below):
        raise ConfigError(
            f"freeze: plan {plan!r} trains parameters below its cache "
            f"boundary (layer {selection.boundary}); the stem must be frozen"
        )
    stem_trains = any(p.requires_grad for p in backbone.embedding_module().parameters())
    if stem_trains and selection.boundary != 0:
        raise ConfigError(
            f"freeze: plan {plan!r} trains the embeddings but puts its "
            f"boundary at layer {selection.boundary}; it must be 0"
        )
    return stem_trains


def describe_plan(settings: dict[str, Any]) -> str:
    """A plan's settings in one line: `top_k (trainable_layers=2) + lora (r=8, ...)`."""

    def one(kind: str, values: dict[str, Any]) -> str:
        options = ", ".join(f"{k}={v}" for k, v in values.items())
        return f"{kind} ({options})" if options else kind

    rest = {k: v for k, v in settings.items() if k not in ("plan", "peft")}
    text = one(str(settings["plan"]), rest)
    peft = settings.get("peft")
    if peft:
        text += " + " + one(peft["method"], {k: v for k, v in peft.items() if k != "method"})
    return text


def make_plan(config: FreezeSpec, backbone: Backbone, peft: PeftSpec | None = None) -> FreezePlan:
    """Apply the configured plan to `backbone.model` (requires_grad) and return it; with
    `peft`, the method's weights are added to the layers the plan trains and train instead
    of them."""
    kind_class = PLANS.get(config.plan)
    if kind_class is None:
        raise ConfigError(f"freeze.plan: {PLANS.unknown(config.plan)}")
    kind = kind_class()
    selection = kind.select(config, backbone)
    if peft is not None:
        selection = _with_peft(selection, peft, backbone)
    unknown = sorted(set(selection.parts) - set(LEARNING_RATES))
    if unknown:
        raise ConfigError(
            f"freeze.plan: plan {config.plan!r} groups what trains under "
            f"{unknown}; the roles with a learning rate are "
            f"{sorted(LEARNING_RATES)}"
        )
    model, stack = backbone.model, backbone.layer_stack()
    parts = {
        role: _unique(p for item in items for p in _parameters(item))
        for role, items in selection.parts.items()
    }
    model.requires_grad_(False)
    for params in parts.values():
        for p in params:
            p.requires_grad_(True)
    stem_trains = _check_stem(config.plan, selection, backbone)
    everything = {id(p) for params in parts.values() for p in params}
    stages = tuple(
        (first, frozenset(id(p) for item in items for p in _parameters(item)))
        for first, items in selection.stages
    )
    if stages and (stages[0][0] != 1 or any(not ids <= everything for _, ids in stages)):
        raise ConfigError(
            f"freeze: plan {config.plan!r} has stages that do not start at "
            "epoch 1 or train what its parts do not name"
        )
    parameters = list(model.parameters())
    return FreezePlan(
        config=config,
        peft=peft,
        boundary=selection.boundary,
        cacheable=selection.boundary > 0 and not stem_trains,
        depth=backbone.depth,
        layers=tuple(stack),
        parts={role: tuple(params) for role, params in parts.items()},
        stages=stages,
        top=(
            *([backbone.embedding_module()] if stem_trains else []),
            *stack[selection.boundary :],
            *backbone.head_modules(),
        ),
        kept_rows=backbone.head_rows if selection.boundary == backbone.depth else None,
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        total_parameters=sum(p.numel() for p in parameters),
        trainable_layers=tuple(
            i for i, layer in enumerate(stack) if any(p.requires_grad for p in layer.parameters())
        ),
        kind=kind,
    )


def _with_peft(selection: Selection, peft: PeftSpec, backbone: Backbone) -> Selection:
    """The selection with the method's added weights training in place of what it trained
    inside the encoder's layers (the head still trains as chosen)."""
    from edgefreeze.peft import METHODS

    method = METHODS.get(peft.method)
    if method is None:
        raise ConfigError(f"peft.method: {METHODS.unknown(peft.method)}")
    layer_of = {
        id(p): i for i, layer in enumerate(backbone.layer_stack()) for p in layer.parameters()
    }
    chosen = [p for item in selection.parts.get("top", []) for p in _parameters(item)]
    layers = sorted({layer_of[id(p)] for p in chosen if id(p) in layer_of})
    if not layers:
        raise ConfigError(
            f"peft: the freezing plan trains no encoder layer to add {peft.method} weights to"
        )
    added = method().attach(peft, backbone, layers)
    head = [p for item in selection.parts.get("head", []) for p in _parameters(item)]
    allowed = {id(p) for p in [*added, *head]}

    def keep(items: Sequence[Trainable]) -> list[nn.Parameter]:
        return [p for item in items for p in _parameters(item) if id(p) in allowed]

    return Selection(
        boundary=selection.boundary,
        parts={"top": added, "head": head},
        stages=[(first, keep(items)) for first, items in selection.stages],
    )


def _parameters(item: Trainable) -> list[nn.Parameter]:
    return [item] if isinstance(item, nn.Parameter) else list(item.parameters())


def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """In order, each parameter once (a module and one of its parameters may both be named)."""
    unique: dict[int, nn.Parameter] = {}
    for p in params:
        unique.setdefault(id(p), p)
    return list(unique.values())


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


@dataclass(frozen=True)
class PlannedModel:
    """A loaded model with its freezing plan applied, and the digest of every tensor that
    does not train (what the activation cache and warm starts key on)."""

    loaded: LoadedModel
    plan: FreezePlan
    frozen_sha256: str

    @classmethod
    def of(
        cls, loaded: LoadedModel, freeze: FreezeSpec, peft: PeftSpec | None, seed: int
    ) -> PlannedModel:
        """Apply the plan (PEFT weights drawn from `seed`, the same in a build and in each
        sweep trial) and digest what stays frozen."""
        torch.manual_seed(seed)
        plan = make_plan(freeze, loaded.backbone, peft)
        return cls(loaded=loaded, plan=plan, frozen_sha256=frozen_digest(loaded.model))

    @property
    def backbone(self) -> Backbone:
        return self.loaded.backbone

    def record(self) -> ModelRecord:
        """The manifest's `model`."""
        return ModelRecord(
            **self.loaded.source,
            frozen_sha256=self.frozen_sha256,
            model_type=hf_config(self.loaded.model).model_type,
            layers=self.loaded.backbone.depth,
        )
