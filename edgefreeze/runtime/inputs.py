"""How a device turns one input into a model feed, per input kind (the manifest's
`task.inputs`). Torch-free: `tokenizers` and numpy for text, Pillow and numpy for images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from edgefreeze.registry import Registry


class InputEncoder(Protocol):
    """Encodes one input as a (1, ...) batch the model takes, from the bundle `files` it
    reads (the runtime verifies them first)."""

    files: tuple[str, ...]
    modality: str  # what the model reads: "text" (a tokenizer) or "image" (pixels)
    sequential: bool  # the feed has a sequence axis (tokens), so lengths apply
    pretokenized: bool  # the input arrives split into words (each word's label is read)

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
    modality, sequential, pretokenized = "text", True, False

    def __init__(self, folder: Path, max_length: int) -> None:
        self.tokenizer = load_tokenizer(folder / "tokenizer.json", max_length)

    def encode(self, example: object) -> dict[str, np.ndarray]:
        if not isinstance(example, str):
            raise TypeError(f"a text model takes text, not {type(example).__name__}")
        e = self.tokenizer.encode(example)
        return {
            "input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64),
        }


# A word or a punctuation mark: how a text is split into words on the device, the way
# CoNLL's sentences are (the tokenizer then splits words into sub-words as in training).
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


@INPUTS.register("words")
class WordInputs:
    """A sentence as words, for models that label each word: a list of words as given
    (what the gate feeds, as training saw them), or a text split into words and
    punctuation marks. Besides the feed, `word_starts` (the token where each word starts,
    else -1) and `word_spans` (each word's [start, end) characters in the text, or in the
    words joined by spaces) let the tags be read back as entities with offsets."""

    files = ("tokenizer.json",)
    modality, sequential, pretokenized = "text", True, True

    def __init__(self, folder: Path, max_length: int) -> None:
        self.tokenizer = load_tokenizer(folder / "tokenizer.json", max_length)

    def encode(self, example: object) -> dict[str, np.ndarray]:
        words, spans = split_words(example)
        e = self.tokenizer.encode(words, is_pretokenized=True)
        return {
            "input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64),
            "word_starts": word_starts(e.word_ids)[None],
            "word_spans": np.array(spans, dtype=np.int64).reshape(1, -1, 2),
        }


@INPUTS.register("image")
class ImageInputs:
    """An image file (a path) as a (1, 3, height, width) batch of pixels, prepared with the
    image processor's saved settings (`edgefreeze.runtime.images`)."""

    files = ("preprocessor_config.json",)
    modality, sequential, pretokenized = "image", False, False

    def __init__(self, folder: Path, max_length: int) -> None:
        from edgefreeze.runtime.images import Preprocessing  # Pillow: image bundles only

        self.preprocessing = Preprocessing.from_folder(folder)

    def encode(self, example: object) -> dict[str, np.ndarray]:
        from edgefreeze.runtime.images import read_image

        if not isinstance(example, (str, os.PathLike)):
            raise TypeError(f"an image model takes an image path, not {type(example).__name__}")
        return {"pixel_values": self.preprocessing.pixels(read_image(example))[None]}


def split_words(example: object) -> tuple[list[str], list[tuple[int, int]]]:
    """Words and their character spans: in a text, or in a list of words joined by
    single spaces."""
    if isinstance(example, str):
        found = list(WORD.finditer(example))
        return [m.group() for m in found], [m.span() for m in found]
    if isinstance(example, (list, tuple)) and all(isinstance(w, str) for w in example):
        spans, at = [], 0
        for word in example:
            spans.append((at, at + len(word)))
            at += len(word) + 1
        return list(example), spans
    raise TypeError(
        f"a word-labelling model takes a text or a list of words, not {type(example).__name__}"
    )


def word_starts(word_ids: Sequence[int | None]) -> np.ndarray:
    """For each token, the index of the word it starts, or -1 (a special token, or a
    word's later sub-token): where the word's label is read."""
    out = np.full(len(word_ids), -1, dtype=np.int64)
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            out[position] = word
        previous = word
    return out


def input_kind(kind: str) -> type[InputEncoder]:
    encoder = INPUTS.get(kind)
    if encoder is None:
        raise ValueError(INPUTS.unknown(kind))
    return encoder
