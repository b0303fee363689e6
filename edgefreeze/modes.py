"""Eval mode for a while, then every module back in the mode it had."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
