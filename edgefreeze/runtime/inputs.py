"""How a device turns one input into a model feed, per input kind (the manifest's
`task.inputs`). Torch-free: `tokenizers` and numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from edgefreeze.registry import Registry


class InputEncoder(Protocol):
    """Encodes one input as a (1, ...) batch the model takes, from the bundle `files` it
    reads (the runtime verifies them first)."""

    files: tuple[str, ...]

    def __init__(self, folder: Path, max_length: int) -> None: ...

    def encode(self, example: object) -> dict[str, np.ndarray]: ...


INPUTS: Registry[type] = Registry("input kind")


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """The fast tokenizer as training used it: truncated to max_length, unpadded."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


@INPUTS.register("text")
class TextInputs:
    """A text as a (1, tokens) batch without padding: what a device feeds the model, and
    what the gate feeds it (dynamic int8 scales activations per batch, so padding would
    change its answers)."""

    files = ("tokenizer.json",)

    def __init__(self, folder: Path, max_length: int) -> None:
        self.tokenizer = load_tokenizer(folder / "tokenizer.json", max_length)

    def encode(self, example: object) -> dict[str, np.ndarray]:
        if not isinstance(example, str):
            raise TypeError(f"a text model takes text, not {type(example).__name__}")
        e = self.tokenizer.encode(example)
        return {"input_ids": np.array([e.ids], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids], dtype=np.int64)}


def input_kind(kind: str) -> type[InputEncoder]:
    encoder = INPUTS.get(kind)
    if encoder is None:
        raise ValueError(INPUTS.unknown(kind))
    return encoder
