"""One training loop, top to bottom: AdamW over the trainable parameters, linear warmup
and decay, gradient clipping, the task's validation metric after every epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.cache.features import StemActivations, advance_features
from edgefreeze.context import RunContext, World
from edgefreeze.errors import ConfigError
from edgefreeze.failpoints import failpoint
from edgefreeze.freeze import LEARNING_RATES, FreezePlan
from edgefreeze.freeze.diagnostics import gradient_flow
from edgefreeze.inference import evaluating
from edgefreeze.runtime.manifest import EpochRecord, FreezeRecord, TrainingRecord, WarmStartRecord
from edgefreeze.schema import TrainSpec
from edgefreeze.tasks import Outputs, Task
from edgefreeze.train.batching import bucketed_batches
from edgefreeze.train.device import autocast, gradient_scaler, resolve_precision

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # stem activations, mask, targets
NO_SCALING = gradient_scaler(torch.device("cpu"), "fp32")  # disabled: passes all through


@dataclass(frozen=True)
class Examples:
    """A split as training reads it: the stem's activations at the plan's boundary (live
    or cached) and the targets."""

    features: StemActivations
    targets: Any


@dataclass(frozen=True)
class Splits:
    train: Examples
    validation: Examples | None = None  # scored after every epoch when given


@dataclass(frozen=True)
class Checks:
    """A sweep's look into a run: the validation score at k/count of the schedule's steps
    (k = 1 .. count; an epoch's own score where one ends there), told to `on_check(k,
    score)`, which may stop the run by raising (a pruner). Checks run in eval mode and
    draw no random numbers, so they leave training as it would be without them. A check
    inside an epoch costs a validation pass: `mid_epoch` names the ones worth it (None:
    all); one at an epoch's end is always told, the score being there anyway."""

    count: int = 0
    on_check: Callable[[int, float], None] | None = None
    mid_epoch: Collection[int] | None = None


@dataclass
class TrainResult:
    device: str
    precision: str
    steps: int = 0
    epochs: list[EpochRecord] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None  # with early stopping: the epoch whose weights were kept
    plan: FreezePlan | None = None  # the plan as training left it (adaptive plans move)

    def kept_epoch(self) -> EpochRecord:
        """The epoch whose weights remain: the best one with early stopping, else the last."""
        return self.epochs[(self.best_epoch or len(self.epochs)) - 1]

    def record(self, freeze: FreezeRecord, warm_start: WarmStartRecord | None) -> TrainingRecord:
        """The manifest's `training`; `freeze`: the plan's record where training left it."""
        return TrainingRecord(
            device=self.device,
            precision=self.precision,
            warm_start=warm_start,
            steps=self.steps,
            epochs=self.epochs,
            step_losses=[round(loss, 5) for loss in self.step_losses],
            best_epoch=self.best_epoch,
            freeze=freeze,
        )


def train(
    backbone: Backbone,
    plan: FreezePlan,
    task: Task,
    splits: Splits,
    settings: TrainSpec,
    ctx: RunContext,
    checks: Checks = Checks(),
) -> TrainResult:
    """Fine-tune what `plan` trains of `backbone.model`, in place.

    The input is the stem's output at the plan's boundary, live or cached: only the top
    runs here. With `settings.early_stopping`, training stops once the validation score
    has not improved for that many epochs, and the best epoch's weights are kept. An
    adaptive plan may freeze more layers after an epoch; from then on the features come
    from the new boundary (computed once from the old ones). With several processes
    (`ctx.world`), each trains on its share of every batch and all take the same steps.
    """
    if settings.early_stopping and splits.validation is None:
        raise ConfigError(
            "train.early_stopping: needs a validation split "
            "(data.split.validation or data.validation)"
        )
    run = _Run(backbone, plan, task, splits, settings, ctx, checks)
    for epoch in range(1, settings.epochs + 1):
        score = run.epoch(epoch)
        if run.stops_early(epoch, score):
            break
    return run.finish()


@dataclass
class _Run:
    """One training run's state, epoch after epoch (see `train`)."""

    backbone: Backbone
    plan: FreezePlan
    task: Task
    splits: Splits
    settings: TrainSpec
    ctx: RunContext
    checks: Checks
    step: TopStep = field(init=False)
    result: TrainResult = field(init=False)
    generator: np.random.Generator = field(init=False)
    scheduler: torch.optim.lr_scheduler.LambdaLR = field(init=False)
    check_at: dict[int, list[int]] = field(init=False)
    norms: list[dict[int, float]] = field(init=False)  # per epoch, for adaptive plans
    best: tuple[float, Snapshot] | None = field(init=False)

    def __post_init__(self) -> None:
        settings, device = self.settings, self.ctx.device
        model = self.backbone.model.to(device)
        if settings.dropout is not None:
            set_dropout(self.plan.top, settings.dropout)
        torch.manual_seed(settings.seed)
        precision = resolve_precision(settings.precision, device)
        rates = {role: getattr(settings, name) for role, name in LEARNING_RATES.items()}
        optimizer = torch.optim.AdamW(
            self.plan.parameter_groups(model, rates, settings.weight_decay, settings.layer_decay)
        )
        self.step = TopStep(
            self.backbone,
            self.task,
            optimizer,
            precision,
            settings.max_grad_norm,
            self.ctx.world,
            gradient_scaler(device, precision),
        )
        self.result = TrainResult(device=str(device), precision=precision)
        self.generator = np.random.default_rng(settings.seed)
        total = (
            math.ceil(len(self.splits.train.features.lengths()) / settings.batch_size)
            * settings.epochs
        )
        warmup = int(settings.warmup * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _lr_factor(step, warmup, total, settings.schedule)
        )
        self.check_at = _check_steps(total, self.checks.count if self.splits.validation else 0)
        self.norms, self.best = [], None

    def epoch(self, epoch: int) -> float | None:
        """Train one epoch, score it, let an adaptive plan move; the validation score."""
        self.plan.begin_epoch(self.backbone.model, epoch)
        start = time.perf_counter()
        layer_norms: dict[int, list[float]] | None = {} if self.plan.kind.adaptive else None
        losses = self._batches(epoch, layer_norms)
        score = self._score() if self.splits.validation is not None else None
        record = EpochRecord(
            epoch=epoch,
            loss=float(np.mean(losses)),
            seconds=round(time.perf_counter() - start, 3),
            validation={} if score is None else {self.task.gate_metric: score},
        )
        if score is not None:
            self._tell(self.check_at.get(self.result.steps, ()), score)
        self.result.epochs.append(record)
        failpoint("train")
        self.result.step_losses.extend(losses)
        self.ctx.reporter.info(
            f"  epoch {epoch}: loss {record.loss:.4f}"
            + "".join(
                f", validation {name} {value:.4f}" for name, value in record.validation.items()
            )
            + f" ({record.seconds:.1f} s)"
        )
        if layer_norms is not None:
            self._adapt(epoch, layer_norms)
        return score

    def _batches(self, epoch: int, layer_norms: dict[int, list[float]] | None) -> list[float]:
        """One pass over the training split; each step's loss."""
        train_set, world = self.splits.train, self.ctx.world
        batches = bucketed_batches(
            train_set.features.lengths(), self.settings.batch_size, self.generator
        )
        losses = []
        for step, indices in enumerate(
            self.ctx.reporter.progress(
                batches, total=len(batches), desc=f"epoch {epoch}/{self.settings.epochs}"
            )
        ):
            mine = world.share(indices)
            batch = (
                (
                    *train_set.features.batch(mine, self.ctx.device),
                    self.task.batch_targets(train_set.targets, mine).to(self.ctx.device),
                )
                if mine
                else None
            )
            losses.append(
                self.step(
                    self.plan,
                    batch,
                    _share(self.task, train_set.targets, mine, indices),
                    check=step == 0,
                    norms=layer_norms,
                )
            )
            self.scheduler.step()
            self.result.steps += 1
            wanted = [
                k
                for k in self.check_at.get(self.result.steps, ())
                if self.checks.mid_epoch is None or k in self.checks.mid_epoch
            ]
            if wanted and step + 1 < len(batches) and self.checks.on_check is not None:
                self._tell(wanted, self._score())
        return losses

    def _score(self) -> float:
        validation = self.splits.validation
        assert validation is not None
        outputs = top_outputs(
            self.backbone,
            self.plan,
            self.task,
            validation.features,
            self.settings.batch_size,
            self.ctx.device,
        )
        return self.task.metrics(outputs, validation.targets, outputs)[self.task.gate_metric]

    def _tell(self, checks: Collection[int], score: float) -> None:
        if self.checks.on_check is not None:
            for k in checks:
                self.checks.on_check(k, score)

    def _adapt(self, epoch: int, layer_norms: dict[int, list[float]]) -> None:
        """After an epoch of an adaptive plan: freeze what it says has settled, and move
        the features up to its new boundary."""
        self.norms.append({i: float(np.mean(steps)) for i, steps in layer_norms.items()})
        moved = self.plan.kind.advance(self.plan, self.norms)
        if not moved or epoch >= self.settings.epochs:
            return
        boundary, why = moved
        old = self.plan
        self.plan = old.frozen_below(boundary, epoch, why)

        def moved_up(split: Examples) -> Examples:
            return replace(
                split,
                features=advance_features(
                    split.features, self.backbone, old, self.plan, self.ctx.device
                ),
            )

        validation = self.splits.validation
        self.splits = Splits(
            moved_up(self.splits.train), moved_up(validation) if validation is not None else None
        )
        self.ctx.reporter.info(f"  {self.plan.config.plan}: froze layers below {boundary} ({why})")

    def stops_early(self, epoch: int, score: float | None) -> bool:
        """With early stopping: keep the best epoch's weights; True once none has beaten
        it for `early_stopping` epochs."""
        patience = self.settings.early_stopping
        if not patience or score is None:
            return False
        if self.best is None or score > self.best[0]:
            self.best, self.result.best_epoch = (score, _snapshot(self.plan)), epoch
            return False
        if epoch - (self.result.best_epoch or 0) < patience:
            return False
        self.ctx.reporter.info(
            f"  early stopping: no better validation "
            f"{self.task.gate_metric} for {patience} epoch(s)"
        )
        return True

    def finish(self) -> TrainResult:
        self.result.plan = self.plan
        if self.best is not None:
            _restore(self.best[1])
            self.ctx.reporter.info(
                f"  kept epoch {self.result.best_epoch}'s weights "
                f"(validation {self.task.gate_metric} {self.best[0]:.4f})"
            )
        self.backbone.model.eval()
        return self.result


def _share(task: Task, targets: Any, mine: Sequence[int], batch: Sequence[int]) -> float:
    """This process's part of a batch's loss: the loss is a mean over examples (or, for a
    tagger, over scored tokens), so summed gradients weighted by this equal one process's."""
    whole = task.loss_weight(targets, batch)
    return task.loss_weight(targets, mine) / whole if mine and whole else 0.0


def _check_steps(total_steps: int, checks: int) -> dict[int, list[int]]:
    """The step after which each check k (of `checks`, evenly spaced) is taken."""
    at: dict[int, list[int]] = {}
    for k in range(1, checks + 1):
        at.setdefault(max(1, round(k * total_steps / checks)), []).append(k)
    return at


def set_dropout(modules: Sequence[torch.nn.Module], probability: float) -> None:
    """Set every dropout probability in `modules`: the `nn.Dropout` layers, and the float
    that SDPA attention passes as `dropout_p` (BERT's and RoBERTa's `dropout_prob`,
    DistilBERT's too), which no `nn.Dropout` holds."""
    for module in (m for top in modules for m in top.modules()):
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, probability)


@dataclass
class TopStep:
    """One optimizer step of the top on a batch of stem activations (`__call__`)."""

    backbone: Backbone
    task: Task
    optimizer: torch.optim.Optimizer
    precision: str
    max_grad_norm: float
    world: World = World()
    scaler: torch.amp.GradScaler = NO_SCALING

    def __call__(
        self,
        plan: FreezePlan,
        batch: Batch | None,
        share: float = 1.0,
        check: bool = False,
        norms: dict[int, list[float]] | None = None,
    ) -> float:
        """Returns the batch's loss. With several processes, `batch` is this one's part of
        it (None: nothing), worth `share` of the whole: gradients are weighted by it and
        summed over the processes, so each takes the step one process would take on the
        whole batch. `check` verifies (on a stage's first step) that every trainable
        parameter got a gradient and no other did; `norms`, when given, gets each
        trainable layer's gradient norm appended to its entry (not on a step whose fp16
        gradients overflowed: the scaler skips that one). With an fp16 `scaler`, the loss
        is scaled for the backward pass and the gradients unscaled before they are
        measured, clipped or stepped on."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        if batch is not None:
            hidden, mask, targets = batch
            with autocast(hidden.device, self.precision):
                outputs = self.backbone.top(hidden, mask, plan.boundary)
            local = self.task.loss(outputs, targets)
            weighted = local * share if share != 1.0 else local
            self.scaler.scale(weighted).backward()  # type: ignore[no-untyped-call]
            loss = local.item() * share
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        if check and batch is not None:
            check_gradients(self.backbone.model, [p for p in parameters if p.requires_grad])
        self.world.sum_gradients(parameters)
        self.scaler.unscale_(self.optimizer)
        if norms is not None:
            _append_norms(plan, norms)
        torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        self.scaler.step(self.optimizer)  # a skipped step still moves the schedule on
        self.scaler.update()
        return self.world.sum(loss)


def _append_norms(plan: FreezePlan, norms: dict[int, list[float]]) -> None:
    """Each trainable layer's gradient norm, appended to its entry when finite."""
    for index in plan.trainable_layers:
        grads = [p.grad for p in plan.layers[index].parameters() if p.grad is not None]
        norm = float(
            torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        )
        if math.isfinite(norm):
            norms.setdefault(index, []).append(norm)


def check_gradients(model: torch.nn.Module, trainable: Sequence[torch.nn.Parameter]) -> None:
    """After a backward pass: every parameter meant to train received a gradient, and no
    other did. Otherwise the plan is wrong (a head off the loss path, a frozen module
    that still learns) and training would silently skip or change it."""
    flow = gradient_flow(model, list(trainable))
    if flow["missing"]:
        raise ConfigError(
            f"freeze: {len(flow['missing'])} parameter tensors the plan trains "
            f"received no gradient (such as {flow['missing'][0]}); they are not "
            "on the loss path"
        )
    if flow["stray"]:
        raise ConfigError(
            f"freeze: {len(flow['stray'])} frozen parameter tensors received a "
            f"gradient (such as {flow['stray'][0]}); the freezing plan leaks"
        )


Snapshot = list[tuple[torch.nn.Parameter, torch.Tensor]]


def _snapshot(plan: FreezePlan) -> Snapshot:
    """A copy of what trains now (on the CPU), to come back to (also to layers an adaptive
    plan freezes later)."""
    return [(p, p.detach().to("cpu", copy=True)) for p in plan.parameters()]


def _restore(snapshot: Snapshot) -> None:
    with torch.no_grad():
        for p, saved in snapshot:
            p.copy_(saved)


@torch.no_grad()
def top_outputs(
    backbone: Backbone,
    plan: FreezePlan,
    task: Task,
    features: StemActivations,
    batch_size: int,
    device: torch.device,
) -> Outputs:
    """The top's outputs from stem activations, in example order, in eval mode."""
    lengths = features.lengths()
    order = np.argsort(lengths, kind="stable")
    out: Outputs = [np.empty(0)] * len(order)
    with evaluating(backbone.model):
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size].tolist()
            logits = backbone.top(*features.batch(indices, device), plan.boundary)
            for index, output in zip(
                indices, task.unbatch(logits.float().cpu().numpy(), lengths[indices])
            ):
                out[index] = output
    return out


def _lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warmup to the full rate, then `schedule` (linear, cosine, constant)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
