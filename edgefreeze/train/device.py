"""Where and in what precision the trainable top runs."""

from __future__ import annotations

import torch

from edgefreeze.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> str:
    """bf16 autocast only where it is fast: CUDA with bf16, or a CPU with bf16 matrix
    instructions, AMX tiles or AVX512-BF16. On this project's machines it halved a top-2
    training step on an AMX Xeon, and took 1.48x less time on an AVX512-BF16 EPYC at the
    same held-out accuracy over three seeds (docs/benchmarks.md, "What moves held-out
    accuracy")."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    fast = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in fast) else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
