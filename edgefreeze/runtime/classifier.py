"""A text classifier from an ONNX file and a tokenizer.json, as a device runs it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


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


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """The fast tokenizer as training used it: truncated to max_length, unpadded."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def encode_text(tokenizer: Tokenizer, text: str) -> dict[str, np.ndarray]:
    """One text as a (1, tokens) batch without padding: what a device feeds the model."""
    e = tokenizer.encode(text)
    return {"input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64)}


class OnnxClassifier:
    """Tokenize with `tokenizers`, run with ONNX Runtime, return numpy logits.

    Args:
        model_paths: one ONNX file (inputs among input_ids, attention_mask,
            token_type_ids of shape (batch, sequence); output (batch, labels)), or two run
            in turn: a stem (same inputs -> hidden (batch, sequence, width)) and a top
            (hidden, attention_mask -> logits), the delta-update form.
        tokenizer_path: the Hugging Face fast tokenizer's tokenizer.json.
        max_length: tokens kept per text, as in training.
        threads: intra-op threads per session (0 lets ONNX Runtime choose).
        session_config: ONNX Runtime session config entries (SESSION_CONFIG when None).
    """

    def __init__(self, model_paths: str | Path | Sequence[str | Path],
                 tokenizer_path: str | Path, max_length: int, threads: int = 0,
                 session_config: Mapping[str, str] | None = None) -> None:
        paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
        options = session_options(threads, session_config)
        self.sessions = [ort.InferenceSession(str(path), options,
                                              providers=["CPUExecutionProvider"])
                         for path in paths]
        self.input_names = [i.name for i in self.sessions[0].get_inputs()]
        width = self.sessions[-1].get_outputs()[0].shape[-1]
        self.num_labels: int | None = width if isinstance(width, int) else None
        self.tokenizer = load_tokenizer(tokenizer_path, max_length)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, labels) for already padded int64 inputs of shape (batch, seq)."""
        feed = {name: inputs[name].astype(np.int64) for name in self.input_names}
        output = self.sessions[0].run(None, feed)[0]
        if len(self.sessions) == 2:
            output = self.sessions[1].run(None, {"hidden": output,
                                                 "attention_mask": feed["attention_mask"]})[0]
        return output

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits (n, labels), one text at a time: exactly what a device computes for it,
        since dynamic int8 scales activations per batch and padding would change them."""
        return np.concatenate([self.run(self.encode(text)) for text in texts], axis=0)

    def encode(self, text: str) -> dict[str, np.ndarray]:
        return encode_text(self.tokenizer, text)
