"""An ONNX model as a device runs it: ONNX Runtime sessions with the gate's settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

# ONNX Runtime session config entries the gate runs every model with, recorded in each
# bundle's manifest so any ONNX Runtime API reproduces the gated numbers. Dynamic int8
# scales activations at run time, so even a different fusion moves a few predictions.
# ONNX Runtime's CPU SkipLayerNormalization kernel is about 4x slower than the Add and
# LayerNormalization it replaces (onnxruntime 1.32; benchmarks/skip_layer_norm.py): with
# the fusion off the default int8 model runs 1.2x (2 threads) to 1.4x (1 thread) faster.
SESSION_CONFIG: dict[str, str] = {"optimization.disable_specified_optimizers":
                                  "SkipLayerNormFusion"}


def session_options(threads: int = 0, config: Mapping[str, str] | None = None
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
    """

    def __init__(self, model_paths: str | Path | Sequence[str | Path], threads: int = 0,
                 session_config: Mapping[str, str] | None = None) -> None:
        paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
        options = session_options(threads, session_config)
        self.sessions = [ort.InferenceSession(str(path), options,
                                              providers=["CPUExecutionProvider"])
                         for path in paths]
        self.input_names = [i.name for i in self.sessions[0].get_inputs()]
        width = self.sessions[-1].get_outputs()[0].shape[-1]
        self.output_width: int | None = width if isinstance(width, int) else None  # dynamic: None

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Outputs for already padded int64 inputs of shape (batch, sequence); inputs the
        graph does not take are ignored."""
        feed = {name: inputs[name].astype(np.int64) for name in self.input_names}
        output = self.sessions[0].run(None, feed)[0]
        if len(self.sessions) == 2:
            output = self.sessions[1].run(None, {"hidden": output,
                                                 "attention_mask": feed["attention_mask"]})[0]
        return output
