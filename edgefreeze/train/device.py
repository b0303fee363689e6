"""In what precision the trainable top runs (the device is the run's: `edgefreeze.context`)."""

from __future__ import annotations

import torch


def resolve_precision(requested: str, device: torch.device) -> str:
    """bf16 autocast only where it is fast: CUDA with bf16, or a CPU with bf16 matrix
    instructions, AMX tiles or AVX512-BF16. On this project's machines it halved a top-2
    training step on an AMX Xeon, and took 1.48x less time on an AVX512-BF16 EPYC at the
    same held-out accuracy over three seeds (docs/benchmarks.md, "What moves held-out
    accuracy"). A GPU without bf16 (before Ampere) gets fp16 with a gradient scaler:
    its tensor cores are fp16."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        # Not emulated bf16 (which torch counts as supported on T4 and V100 by default).
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    fast = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return "bf16" if any(getattr(torch.cpu, name, lambda: False)() for name in fast) else "fp32"


AUTOCAST_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(
        device.type,
        dtype=AUTOCAST_TYPES.get(precision, torch.bfloat16),
        enabled=precision in AUTOCAST_TYPES,
    )


def gradient_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16's narrow range flushes small gradients to zero: the scaler multiplies the loss
    before the backward pass, divides the gradients after it, and skips a step whose
    gradients overflowed. bf16 and fp32 have fp32's range and need none (disabled, it
    passes everything through)."""
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    # Its scale exists from the first scaled loss on; a process with no examples in the
    # first step (torchrun) scales none, and unscaling the summed gradients needs it.
    scaler.scale(torch.zeros((), device=device))
    return scaler
