"""One training loop, top to bottom: AdamW over the trainable parameters, linear warmup
and decay, gradient clipping, the task's validation metric after every epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.cache.features import Features, advance_features
from edgefreeze.context.world import World
from edgefreeze.errors import ConfigError
from edgefreeze.failpoints import failpoint
from edgefreeze.freeze import LEARNING_RATES, FreezePlan
from edgefreeze.freeze.diagnostics import gradient_flow
from edgefreeze.modes import evaluating
from edgefreeze.progress import Reporter
from edgefreeze.schema import TrainSpec
from edgefreeze.tasks import Outputs, Task
from edgefreeze.train.batching import bucketed_batches
from edgefreeze.train.device import autocast, gradient_scaler, resolve_precision


@dataclass
class TrainResult:
    device: str
    precision: str
    steps: int = 0
    epochs: list[dict] = field(default_factory=list)  # epoch, mean loss, seconds, validation
    step_losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None  # with early stopping: the epoch whose weights were kept
    plan: FreezePlan | None = None  # the plan as training left it (adaptive plans move)


def train(backbone: Backbone, plan: FreezePlan, task: Task, train_set: Features,
          train_targets: Any, val_set: Features | None, val_targets: Any | None,
          spec: TrainSpec, device: torch.device, reporter: Reporter,
          world: World = World(), checks: int = 0,
          on_check: Callable[[int, float], None] | None = None,
          mid_epoch_checks: Collection[int] | None = None) -> TrainResult:
    """Fine-tune what `plan` trains of `backbone.model`, in place.

    The input is the stem's output at the plan's boundary, live or cached: only the top
    runs here. With `spec.early_stopping`, training stops once the validation score has
    not improved for that many epochs, and the best epoch's weights are kept. An adaptive
    plan may freeze more layers after an epoch; from then on the features come from the
    new boundary (computed once from the old ones). With several processes (`world`),
    each trains on its share of every batch and all take the same steps. With `checks`,
    the validation score is also taken at k/checks of the schedule's steps (k = 1 ..
    checks, an epoch's own score where one ends there) and told to `on_check(k, score)`:
    a sweep's pruner may stop the run there by raising. Checks run in eval mode and draw
    no random numbers, so they leave training as it would be without them. A check inside
    an epoch costs a validation pass: `mid_epoch_checks` names the ones worth it (None:
    all); one at an epoch's end is always told, the score being there anyway.
    """
    if spec.early_stopping and val_set is None:
        raise ConfigError("train.early_stopping: needs a validation split "
                          "(data.split.validation or data.validation)")
    model = backbone.model.to(device)
    if spec.dropout is not None:
        set_dropout(plan.top, spec.dropout)
    torch.manual_seed(spec.seed)
    precision = resolve_precision(spec.precision, device)
    scaler = gradient_scaler(device, precision)
    result = TrainResult(device=str(device), precision=precision)
    rates = {role: getattr(spec, setting) for role, setting in LEARNING_RATES.items()}
    optimizer = torch.optim.AdamW(plan.parameter_groups(model, rates, spec.weight_decay,
                                                        spec.layer_decay))
    generator = np.random.default_rng(spec.seed)
    lengths = train_set.lengths()
    steps_per_epoch = math.ceil(len(lengths) / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    warmup_steps = int(spec.warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, warmup_steps, total_steps, spec.schedule))
    check_at = _check_steps(total_steps, checks if val_set is not None else 0)
    best: tuple[float, Snapshot] | None = None

    norms: list[dict[int, float]] = []  # per epoch, for adaptive plans
    for epoch in range(1, spec.epochs + 1):
        plan.begin_epoch(model, epoch)
        start, losses = time.perf_counter(), []
        layer_norms: dict[int, list[float]] | None = {} if plan.kind.adaptive else None
        batches = bucketed_batches(lengths, spec.batch_size, generator)
        for step, indices in enumerate(reporter.progress(batches, total=len(batches),
                                                         desc=f"epoch {epoch}/{spec.epochs}")):
            mine = world.share(indices)
            batch = (*train_set.batch(mine, device),
                     task.batch_targets(train_targets, mine).to(device)) if mine else None
            loss = train_step(backbone, plan, task, batch, optimizer, precision,
                              spec.max_grad_norm, check=step == 0, norms=layer_norms,
                              world=world, share=_share(task, train_targets, mine, indices),
                              scaler=scaler)
            scheduler.step()
            result.steps += 1
            losses.append(loss)
            wanted = [k for k in check_at.get(result.steps, ())
                      if mid_epoch_checks is None or k in mid_epoch_checks]
            if wanted and step + 1 < len(batches) and on_check is not None:
                check_score = _validation_score(backbone, plan, task, val_set, val_targets,
                                                spec, device)
                for k in wanted:
                    on_check(k, check_score)
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  "seconds": round(time.perf_counter() - start, 3)}
        if val_set is not None and val_targets is not None:
            score = _validation_score(backbone, plan, task, val_set, val_targets, spec, device)
            record["validation"] = {task.gate_metric: score}
            if on_check is not None:
                for k in check_at.get(result.steps, ()):
                    on_check(k, score)
        result.epochs.append(record)
        failpoint("train")
        result.step_losses.extend(losses)
        reporter.info("  epoch {epoch}: loss {loss:.4f}".format(**record)
                      + "".join(f", validation {name} {value:.4f}"
                                for name, value in record.get("validation", {}).items())
                      + f" ({record['seconds']:.1f} s)")
        if layer_norms is not None:
            norms.append({i: float(np.mean(steps)) for i, steps in layer_norms.items()})
            moved = plan.kind.advance(plan, norms)
            if moved and epoch < spec.epochs:
                boundary, why = moved
                old, plan = plan, plan.frozen_below(boundary, epoch, why)
                train_set = advance_features(train_set, backbone, old, plan, device)
                if val_set is not None:
                    val_set = advance_features(val_set, backbone, old, plan, device)
                reporter.info(f"  {plan.config.plan}: froze layers below {boundary} ({why})")
        if spec.early_stopping:
            if best is None or score > best[0]:
                best, result.best_epoch = (score, _snapshot(plan)), epoch
            elif epoch - result.best_epoch >= spec.early_stopping:
                reporter.info(f"  early stopping: no better validation {task.gate_metric} "
                              f"for {spec.early_stopping} epoch(s)")
                break
    result.plan = plan
    if best is not None:
        _restore(best[1])
        reporter.info(f"  kept epoch {result.best_epoch}'s weights "
                      f"(validation {task.gate_metric} {best[0]:.4f})")
    model.eval()
    return result


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


def _validation_score(backbone: Backbone, plan: FreezePlan, task: Task, val_set: Features,
                      val_targets: Any, spec: TrainSpec, device: torch.device) -> float:
    outputs = top_outputs(backbone, plan, task, val_set, spec.batch_size, device)
    return task.metrics(outputs, val_targets, outputs)[task.gate_metric]


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


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # stem activations, mask, targets
NO_SCALING = gradient_scaler(torch.device("cpu"), "fp32")  # disabled: passes all through


def train_step(backbone: Backbone, plan: FreezePlan, task: Task, batch: Batch | None,
               optimizer: torch.optim.Optimizer, precision: str, max_grad_norm: float,
               check: bool = False, norms: dict[int, list[float]] | None = None,
               world: World = World(), share: float = 1.0,
               scaler: torch.amp.GradScaler = NO_SCALING) -> float:
    """One optimizer step of the top on a batch of stem activations; returns the batch's
    loss. With several processes, `batch` is this one's part of it (None: nothing), worth
    `share` of the whole: gradients are weighted by it and summed over the processes, so
    each takes the step one process would take on the whole batch. `check` verifies (on
    a stage's first step) that every trainable parameter got a gradient and no other did;
    `norms`, when given, gets each trainable layer's gradient norm appended to its entry
    (not on a step whose fp16 gradients overflowed: the scaler skips that one). With an
    fp16 `scaler`, the loss is scaled for the backward pass and the gradients unscaled
    before they are measured, clipped or stepped on."""
    optimizer.zero_grad(set_to_none=True)
    loss = 0.0
    if batch is not None:
        hidden, mask, targets = batch
        with autocast(hidden.device, precision):
            outputs = backbone.top(hidden, mask, plan.boundary)
        local = task.loss(outputs, targets)
        weighted = local * share if share != 1.0 else local
        scaler.scale(weighted).backward()
        loss = local.item() * share
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if check and batch is not None:
        check_gradients(backbone.model, [p for p in parameters if p.requires_grad])
    world.sum_gradients(parameters)
    scaler.unscale_(optimizer)
    if norms is not None:
        for index in plan.trainable_layers:
            grads = [p.grad for p in plan.layers[index].parameters() if p.grad is not None]
            norm = float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            if math.isfinite(norm):
                norms.setdefault(index, []).append(norm)
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    scaler.step(optimizer)  # a skipped step still moves the schedule on, as in torch's AMP
    scaler.update()
    return world.sum(loss)


def check_gradients(model: torch.nn.Module, trainable: Sequence[torch.nn.Parameter]) -> None:
    """After a backward pass: every parameter meant to train received a gradient, and no
    other did. Otherwise the plan is wrong (a head off the loss path, a frozen module
    that still learns) and training would silently skip or change it."""
    flow = gradient_flow(model, list(trainable))
    if flow["missing"]:
        raise ConfigError(f"freeze: {len(flow['missing'])} parameter tensors the plan trains "
                          f"received no gradient (such as {flow['missing'][0]}); they are not "
                          "on the loss path")
    if flow["stray"]:
        raise ConfigError(f"freeze: {len(flow['stray'])} frozen parameter tensors received a "
                          f"gradient (such as {flow['stray'][0]}); the freezing plan leaks")


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
def top_outputs(backbone: Backbone, plan: FreezePlan, task: Task, features: Features,
                batch_size: int, device: torch.device) -> Outputs:
    """The top's outputs from stem activations, in example order, in eval mode."""
    lengths = features.lengths()
    order = np.argsort(lengths, kind="stable")
    out: Outputs = [np.empty(0)] * len(order)
    with evaluating(backbone.model):
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size].tolist()
            logits = backbone.top(*features.batch(indices, device), plan.boundary)
            for index, output in zip(indices, task.unbatch(logits.float().cpu().numpy(),
                                                           lengths[indices])):
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
