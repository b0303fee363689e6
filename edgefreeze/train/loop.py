"""One training loop, top to bottom: AdamW over the trainable parameters, linear warmup
and decay, gradient clipping, the task's validation metric after every epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.errors import EdgefreezeError
from edgefreeze.freeze import LEARNING_RATES, FreezePlan
from edgefreeze.progress import Reporter
from edgefreeze.spec import TrainSpec
from edgefreeze.tasks import Outputs, Task
from edgefreeze.train.batching import bucketed_batches
from edgefreeze.train.device import autocast, resolve_precision
from edgefreeze.train.features import Features


@dataclass
class TrainResult:
    device: str
    precision: str
    steps: int = 0
    epochs: list[dict] = field(default_factory=list)  # epoch, mean loss, seconds, validation
    step_losses: list[float] = field(default_factory=list)


def train(backbone: Backbone, plan: FreezePlan, task: Task, train_set: Features,
          train_targets: Any, val_set: Features | None, val_targets: Any | None,
          spec: TrainSpec, device: torch.device, reporter: Reporter) -> TrainResult:
    """Fine-tune what `plan` trains of `backbone.model`, in place.

    The input is the stem's output at the plan's boundary, live or cached: only the top
    runs here.
    """
    model = backbone.model.to(device)
    torch.manual_seed(spec.seed)
    precision = resolve_precision(spec.precision, device)
    result = TrainResult(device=str(device), precision=precision)
    rates = {role: getattr(spec, setting) for role, setting in LEARNING_RATES.items()}
    optimizer = torch.optim.AdamW(plan.parameter_groups(model, rates, spec.weight_decay))
    generator = np.random.default_rng(spec.seed)
    lengths = train_set.lengths()
    steps_per_epoch = math.ceil(len(lengths) / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    warmup_steps = int(spec.warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _linear_schedule(step, warmup_steps, total_steps))

    for epoch in range(1, spec.epochs + 1):
        plan.set_train_mode(model)
        start, losses = time.perf_counter(), []
        batches = bucketed_batches(lengths, spec.batch_size, generator)
        for indices in reporter.progress(batches, total=len(batches),
                                         desc=f"epoch {epoch}/{spec.epochs}"):
            hidden, mask = train_set.batch(indices, device)
            targets = task.batch_targets(train_targets, indices).to(device)
            loss = train_step(backbone, plan, task, hidden, mask, targets, optimizer,
                              precision, spec.max_grad_norm, check=result.steps == 0)
            scheduler.step()
            result.steps += 1
            losses.append(loss)
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  "seconds": round(time.perf_counter() - start, 3)}
        if val_set is not None and val_targets is not None:
            outputs = top_outputs(backbone, plan, task, val_set, spec.batch_size, device)
            metric = task.metrics(outputs, val_targets, outputs)[task.gate_metric]
            record["validation"] = {task.gate_metric: metric}
        result.epochs.append(record)
        result.step_losses.extend(losses)
        reporter.info("  epoch {epoch}: loss {loss:.4f}".format(**record)
                      + "".join(f", validation {name} {value:.4f}"
                                for name, value in record.get("validation", {}).items())
                      + f" ({record['seconds']:.1f} s)")
    model.eval()
    return result


def train_step(backbone: Backbone, plan: FreezePlan, task: Task, hidden: torch.Tensor,
               mask: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
               precision: str, max_grad_norm: float, check: bool = False) -> float:
    """One optimizer step of the top on a batch of stem activations; returns the loss.
    `check` verifies (on the first step) that every trainable parameter got a gradient."""
    with autocast(hidden.device, precision):
        outputs = backbone.top(hidden, mask, plan.boundary)
    loss = task.loss(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if check:
        check_gradients(parameters)
    torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    return loss.item()


def check_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Every trainable parameter must receive a gradient; otherwise the freeze plan is
    wrong (a head that is not on the loss path, say) and training would silently skip it."""
    missing = sum(1 for p in parameters if p.grad is None)
    if missing:
        raise EdgefreezeError(f"{missing} trainable parameter tensors received no gradient; "
                              "the model's head is not on the loss path")


@torch.no_grad()
def top_outputs(backbone: Backbone, plan: FreezePlan, task: Task, features: Features,
                batch_size: int, device: torch.device) -> Outputs:
    """The top's outputs from stem activations, in example order, in eval mode."""
    was_training = backbone.model.training
    backbone.model.eval()
    lengths = features.lengths()
    order = np.argsort(lengths, kind="stable")
    out: Outputs = [np.empty(0)] * len(order)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size].tolist()
        logits = backbone.top(*features.batch(indices, device), plan.boundary)
        for index, output in zip(indices, task.unbatch(logits.float().cpu().numpy(),
                                                       lengths[indices])):
            out[index] = output
    backbone.model.train(was_training)
    return out


def _linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
