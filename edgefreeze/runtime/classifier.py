"""A text classifier from an ONNX file and a tokenizer.json, as a device runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """The fast tokenizer as training used it: truncated to max_length, unpadded."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


class OnnxClassifier:
    """Tokenize with `tokenizers`, run with ONNX Runtime, return numpy logits.

    Args:
        model_path: an ONNX file with inputs among input_ids, attention_mask,
            token_type_ids of shape (batch, sequence) and a (batch, labels) output.
        tokenizer_path: the Hugging Face fast tokenizer's tokenizer.json.
        max_length: tokens kept per text, as in training.
        threads: intra-op threads (0 lets ONNX Runtime choose).
    """

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path, max_length: int,
                 threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = load_tokenizer(tokenizer_path, max_length)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits (batch, labels) for already padded int64 inputs of shape (batch, seq)."""
        feed = {name: inputs[name].astype(np.int64) for name in self.input_names}
        return self.session.run(None, feed)[0]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits (n, labels), one text at a time: exactly what a device computes for it,
        since dynamic int8 scales activations per batch and padding would change them."""
        return np.concatenate([self.run(self.encode(text)) for text in texts], axis=0)

    def encode(self, text: str) -> dict[str, np.ndarray]:
        """One text as a (1, tokens) batch without padding."""
        e = self.tokenizer.encode(text)
        return {"input_ids": np.array([e.ids], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids], dtype=np.int64)}
