"""One training loop, top to bottom: AdamW over the trainable parameters, linear warmup
and decay, gradient clipping, validation accuracy after every epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.batching import Encoded, bucketed_batches
from edgefreeze.errors import ConfigError, EdgefreezeError
from edgefreeze.features import CachedFeatures, LiveFeatures
from edgefreeze.freeze import parameter_groups, set_train_mode
from edgefreeze.progress import Reporter
from edgefreeze.spec import TrainSpec

Features = LiveFeatures | CachedFeatures


@dataclass
class TrainResult:
    device: str
    precision: str
    steps: int = 0
    epochs: list[dict] = field(default_factory=list)  # epoch, mean loss, val accuracy, seconds
    step_losses: list[float] = field(default_factory=list)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    """bf16 autocast only where it is fast: CUDA with bf16, or a CPU with AMX tiles (on
    this project's build machines it halves a top-2 training step against fp32)."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16" if amx() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train(backbone: Backbone, boundary: int, train_set: Features, train_labels: np.ndarray,
          val_set: Features | None, val_labels: np.ndarray | None, spec: TrainSpec,
          device: torch.device, reporter: Reporter) -> TrainResult:
    """Fine-tune the layers above `boundary` and the head of `backbone.model`, in place.

    The input is the stem's output at `boundary`, live or cached: only the top runs here.
    """
    model = backbone.model.to(device)
    trainable_layers = backbone.depth - boundary
    torch.manual_seed(spec.seed)
    precision = resolve_precision(spec.precision, device)
    result = TrainResult(device=str(device), precision=precision)
    groups = parameter_groups(backbone, trainable_layers, spec.lr_top, spec.lr_head,
                              spec.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    generator = np.random.default_rng(spec.seed)
    lengths = train_set.lengths()
    steps_per_epoch = math.ceil(len(lengths) / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    warmup_steps = int(spec.warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _linear_schedule(step, warmup_steps, total_steps))
    labels_all = torch.from_numpy(train_labels)

    for epoch in range(1, spec.epochs + 1):
        set_train_mode(backbone, trainable_layers)
        start, losses = time.perf_counter(), []
        batches = bucketed_batches(lengths, spec.batch_size, generator)
        for indices in reporter.progress(batches, total=len(batches),
                                         desc=f"epoch {epoch}/{spec.epochs}"):
            hidden, mask = train_set.batch(indices, device)
            labels = labels_all[indices].to(device)
            with autocast(device, precision):
                logits = backbone.top(hidden, mask, boundary)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if result.steps == 0:
                _check_gradients(groups)
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]],
                                           spec.max_grad_norm)
            optimizer.step()
            scheduler.step()
            result.steps += 1
            losses.append(loss.item())
        record = {"epoch": epoch, "loss": float(np.mean(losses)),
                  "seconds": round(time.perf_counter() - start, 3)}
        if val_set is not None and val_labels is not None:
            predictions = top_logits(backbone, boundary, val_set, spec.batch_size, device)
            record["val_accuracy"] = float((predictions.argmax(axis=1) == val_labels).mean())
        result.epochs.append(record)
        result.step_losses.extend(losses)
        reporter.info("  epoch {epoch}: loss {loss:.4f}".format(**record)
                      + (f", validation accuracy {record['val_accuracy']:.4f}"
                         if "val_accuracy" in record else "") + f" ({record['seconds']:.1f} s)")
    model.eval()
    return result


@torch.no_grad()
def top_logits(backbone: Backbone, boundary: int, features: Features, batch_size: int,
               device: torch.device) -> np.ndarray:
    """(n, labels) logits of the top alone, in example order, in eval mode."""
    was_training = backbone.model.training
    backbone.model.eval()
    order = np.argsort(features.lengths(), kind="stable")
    out = np.zeros((len(order), backbone.model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size].tolist()
        out[indices] = backbone.top(*features.batch(indices, device), boundary).float().cpu().numpy()
    backbone.model.train(was_training)
    return out


@torch.no_grad()
def torch_logits(model: torch.nn.Module, encoded: Encoded, batch_size: int,
                 device: torch.device) -> np.ndarray:
    """(n, num_labels) fp32 logits in example order; batches sorted by length for speed."""
    was_training = model.training
    model.eval()
    order = np.argsort(encoded.lengths(), kind="stable")
    out = np.zeros((len(encoded), model.config.num_labels), dtype=np.float32)
    for indices, batch in encoded.batches(batch_size, order.tolist()):
        inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        out[indices] = model(**inputs).logits.float().cpu().numpy()
    model.train(was_training)
    return out


def _linear_schedule(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def _check_gradients(groups: list[dict]) -> None:
    """Every trainable parameter must receive a gradient; otherwise the freeze plan is
    wrong (a head that is not on the loss path, say) and training would silently skip it."""
    missing = sum(1 for g in groups for p in g["params"] if p.grad is None)
    if missing:
        raise EdgefreezeError(f"{missing} trainable parameter tensors received no gradient; "
                              "the model's head is not on the loss path")

