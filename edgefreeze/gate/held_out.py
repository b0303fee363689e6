"""The held-out split as every stage after training reads it: its inputs as the device
gets them, its targets, PyTorch's tokens and outputs (the reference every ONNX model is
held to), and how the device encodes an input. One value, made once after training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgefreeze.inference import evaluating, exact_fp32
from edgefreeze.runtime.inputs import InputEncoder
from edgefreeze.tasks import Outputs, Task
from edgefreeze.tasks.encoding import ModelInputs


@dataclass(frozen=True)
class HeldOut:
    examples: list[Any]  # the inputs as a device gets them (texts, word lists, images)
    targets: Any
    encoded: ModelInputs  # PyTorch's inputs
    reference: Outputs  # PyTorch's outputs, fp32, in example order
    encoder: InputEncoder  # the device's encoding, from the bundle's files
    fingerprint: str  # of the split's rows (is a baseline's held-out split the same?)
    label_names: list[str]

    def feed(self, row: int) -> dict[str, np.ndarray]:
        """One example as the device feeds it to a model."""
        return self.encoder.encode(self.examples[row])


@torch.no_grad()
def reference_outputs(
    model: torch.nn.Module,
    task: Task,
    encoded: ModelInputs,
    device: torch.device,
    batch_size: int = 64,
) -> Outputs:
    """PyTorch's held-out outputs, fp32, in example order: what every ONNX model is
    compared with. Batches sorted by length (less padding)."""
    lengths = encoded.lengths()
    out: Outputs = [np.empty(0)] * len(encoded)
    with evaluating(model), exact_fp32():
        for indices, batch in encoded.batches(batch_size, np.argsort(lengths, kind="stable")):
            inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            logits = model(**inputs).logits.float().cpu().numpy()
            for index, output in zip(indices, task.unbatch(logits, lengths[indices])):
                out[index] = output
    return out
