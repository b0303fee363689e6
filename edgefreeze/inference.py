"""How a model runs when nothing of it trains (the frozen stem filling the cache, the
reference outputs, the shape check): in eval mode for a while, then every module back in
the mode it had; in exact fp32 on a GPU, then torch's settings as they were."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block; afterwards each submodule is back in its own
    mode. `model.train(was_training)` would put every submodule in one mode, undoing a
    freezing plan that keeps the frozen part in eval mode (no dropout in a live stem, fixed
    BatchNorm statistics) in the middle of an epoch."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 that is fp32 on a GPU too. cuDNN convolutions default to TF32 (10-bit
    mantissas) on Ampere and later, and `set_float32_matmul_precision("high")` does the
    same to matmuls: either would move the outputs that every ONNX form is held to within
    1e-3, and the activations the cache keeps. Only these two switches are touched."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
