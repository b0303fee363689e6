"""Outputs of a trained model in eval mode, one array per example: of the whole model (the
reference every ONNX model is gated against) or of the top alone (validation)."""

from __future__ import annotations

import numpy as np
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.freeze import FreezePlan
from edgefreeze.tasks import Outputs, Task
from edgefreeze.train.batching import Encoded
from edgefreeze.train.features import Features


@torch.no_grad()
def model_outputs(model: torch.nn.Module, task: Task, encoded: Encoded, batch_size: int,
                  device: torch.device) -> Outputs:
    """The whole model's fp32 outputs in example order; batches sorted by length (less
    padding)."""
    was_training = model.training
    model.eval()
    lengths = encoded.lengths()
    out: Outputs = [np.empty(0)] * len(encoded)
    for indices, batch in encoded.batches(batch_size, np.argsort(lengths, kind="stable")):
        inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        logits = model(**inputs).logits.float().cpu().numpy()
        for index, output in zip(indices, task.unbatch(logits, lengths[indices])):
            out[index] = output
    model.train(was_training)
    return out


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
