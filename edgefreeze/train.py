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
from edgefreeze.batching import Encoded
from edgefreeze.errors import ConfigError, EdgefreezeError
from edgefreeze.freeze import parameter_groups, set_train_mode
from edgefreeze.progress import Reporter
from edgefreeze.spec import TrainSpec


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


def train(backbone: Backbone, trainable_layers: int, train_set: Encoded, train_labels: np.ndarray,
          val_set: Encoded | None, val_labels: np.ndarray | None, spec: TrainSpec,
          device: torch.device, reporter: Reporter) -> TrainResult:
    """Fine-tune the unfrozen top of `backbone.model` in place."""
    model = backbone.model.to(device)
    torch.manual_seed(spec.seed)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    result = TrainResult(device=str(device), precision="bf16-autocast" if use_bf16 else "fp32")
    groups = parameter_groups(backbone, trainable_layers, spec.lr_top, spec.lr_head,
                              spec.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(train_set) / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    warmup_steps = int(spec.warmup * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _linear_schedule(step, warmup_steps, total_steps))
    generator = torch.Generator().manual_seed(spec.seed)
    labels_all = torch.from_numpy(train_labels)

    for epoch in range(1, spec.epochs + 1):
        set_train_mode(backbone, trainable_layers)
        start, losses = time.perf_counter(), []
        order = torch.randperm(len(train_set), generator=generator).tolist()
        batches = reporter.progress(train_set.batches(spec.batch_size, order),
                                    total=steps_per_epoch, desc=f"epoch {epoch}/{spec.epochs}")
        for indices, batch in batches:
            inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            labels = labels_all[indices].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(**inputs).logits
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
            predictions = torch_logits(model, val_set, spec.batch_size, device).argmax(axis=1)
            record["val_accuracy"] = float((predictions == val_labels).mean())
        result.epochs.append(record)
        result.step_losses.extend(losses)
        reporter.info("  epoch {epoch}: loss {loss:.4f}".format(**record)
                      + (f", validation accuracy {record['val_accuracy']:.4f}"
                         if "val_accuracy" in record else "") + f" ({record['seconds']:.1f} s)")
    model.eval()
    return result


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

