"""An ONNX model as a device runs it: ONNX Runtime sessions with the gate's settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

# ONNX Runtime's names of the input types a model takes.
_NUMPY_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}

# ONNX Runtime session config entries the gate runs every model with, recorded in each
# bundle's manifest so any ONNX Runtime API reproduces the gated numbers. Dynamic int8
# scales activations at run time, so even a different fusion moves a few predictions.
# ONNX Runtime's CPU SkipLayerNormalization kernel is about 4x slower than the Add and
# LayerNormalization it replaces (onnxruntime 1.32; benchmarks/skip_layer_norm.py): with
# the fusion off the default int8 model runs 1.2x (2 threads) to 1.4x (1 thread) faster.
SESSION_CONFIG: dict[str, str] = {
    "optimization.disable_specified_optimizers": "SkipLayerNormFusion"
}


CPU_PROVIDERS = ("CPUExecutionProvider",)


def providers_for(precision: str) -> tuple[str, ...]:
    """Where a model form of this precision runs: fp16 forms are made for GPU targets, so
    CUDA first where this ONNX Runtime has it (onnxruntime-gpu on a machine with a CUDA
    device), with the CPU for any node CUDA lacks; every other form on the CPU, the edge
    devices' processor."""
    if precision == "fp16" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ("CUDAExecutionProvider", *CPU_PROVIDERS)
    return CPU_PROVIDERS


def _session(
    path: str | Path, options: ort.SessionOptions, providers: Sequence[str]
) -> ort.InferenceSession:
    """A session on `providers`; if one of them fails to start (onnxruntime-gpu with no
    usable GPU, a driver mismatch), on the CPU. ONNX Runtime's own fallback would print
    its notice to stdout, which `--json` keeps for the one JSON document."""
    try:
        return ort.InferenceSession(
            str(path), options, providers=list(providers), enable_fallback=0
        )
    except Exception:  # noqa: BLE001 - ONNX Runtime's errors share no narrower base
        if tuple(providers) == CPU_PROVIDERS:
            raise
        return ort.InferenceSession(str(path), options, providers=list(CPU_PROVIDERS))


def session_options(
    threads: int = 0, config: Mapping[str, str] | None = None
) -> ort.SessionOptions:
    """SessionOptions with `threads` intra-op threads (0: ONNX Runtime's choice) and the
    given config entries (SESSION_CONFIG when None)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for key, value in (SESSION_CONFIG if config is None else config).items():
        options.add_session_config_entry(key, value)
    return options


class OnnxModel:
    """One model form: a single graph, or a stem and a top run in turn.

    Args:
        model_paths: one ONNX file (inputs such as input_ids and attention_mask of shape
            (batch, sequence); output (batch, ..., labels)), or two: a stem (same inputs ->
            hidden (batch, sequence, width)) and a top (hidden, attention_mask -> outputs),
            the delta-update form.
        threads: intra-op threads per session (0 lets ONNX Runtime choose).
        session_config: ONNX Runtime session config entries (SESSION_CONFIG when None).
        providers: ONNX Runtime execution providers, in order of preference.
    """

    def __init__(
        self,
        model_paths: str | Path | Sequence[str | Path],
        threads: int = 0,
        session_config: Mapping[str, str] | None = None,
        providers: Sequence[str] = CPU_PROVIDERS,
    ) -> None:
        paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
        options = session_options(threads, session_config)
        self.sessions = [_session(path, options, providers) for path in paths]
        # The first provider the session runs on (nodes it lacks run on the CPU).
        self.provider = self.sessions[0].get_providers()[0]
        self.input_types = {i.name: _NUMPY_TYPES[i.type] for i in self.sessions[0].get_inputs()}
        self.input_names = list(self.input_types)
        self.top_inputs = (
            [i.name for i in self.sessions[1].get_inputs()] if len(self.sessions) == 2 else []
        )
        width = self.sessions[-1].get_outputs()[0].shape[-1]
        self.output_width: int | None = width if isinstance(width, int) else None  # dynamic: None

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Outputs for already padded inputs (token ids and masks of shape (batch,
        sequence), or pixels), cast to the graph's types; inputs the graph does not take
        are ignored."""
        feed = {name: inputs[name].astype(kind) for name, kind in self.input_types.items()}
        output = self.sessions[0].run(None, feed)[0]
        if len(self.sessions) == 2:
            output = self.sessions[1].run(
                None, {name: output if name == "hidden" else feed[name] for name in self.top_inputs}
            )[0]
        return np.asarray(output)
