"""Real sentences for token classification: Rotten Tomatoes snippets with every mention of
the film's own title tagged as a FILM entity (the data names the film of each snippet)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edgefreeze.data.sources import read_source
from edgefreeze.runtime.inputs import split_words

Sentence = tuple[list[str], list[str]]


def film_sentences(count: int, seed: int = 0) -> list[Sentence]:
    """`count` snippets as words and IOB2 tags: two thirds mention their film's title."""
    table = read_source("builtin:rotten-tomatoes", lambda spec: spec)
    mentions, others = [], []
    for row in table.rows:
        title = str(row["movie_name"]).replace("_", " ")
        words, spans = split_words(str(row["text"]))
        found = [m.span() for m in re.finditer(rf"\b{re.escape(title)}\b", row["text"], re.I)]
        tags = ["O"] * len(words)
        for start, end in found:
            inside = [i for i, (s, e) in enumerate(spans) if s >= start and e <= end]
            for n, i in enumerate(inside):
                tags[i] = ("B-" if n == 0 else "I-") + "FILM"
        (mentions if found and len(title) > 3 else others).append((words, tags))
    rng = np.random.default_rng(seed)
    wanted = [mentions[i] for i in rng.choice(len(mentions), 2 * count // 3, replace=False)]
    wanted += [others[i] for i in rng.choice(len(others), count - len(wanted), replace=False)]
    return [wanted[i] for i in rng.permutation(len(wanted))]


def to_scheme(tags: list[str], scheme: str) -> list[str]:
    """IOB2 tags in IOB1 (B- only after an entity of the same type) or BIOES."""
    out = []
    for i, tag in enumerate(tags):
        following = tags[i + 1] if i + 1 < len(tags) else "O"
        if tag == "O":
            out.append(tag)
        elif scheme == "IOB1":
            previous = tags[i - 1] if i else "O"
            same = tag.startswith("B-") and previous[2:] == tag[2:]
            out.append(("B-" if same else "I-") + tag[2:])
        else:  # BIOES
            ends = not following.startswith("I-")
            prefix = {("B", True): "S", ("B", False): "B", ("I", True): "E", ("I", False): "I"}[
                (tag[0], ends)
            ]
            out.append(f"{prefix}-{tag[2:]}")
    return out


def write_conll(path: Path, sentences: list[Sentence]) -> Path:
    """CoNLL-2003's layout: word, a part-of-speech placeholder, the tag; documents marked."""
    lines = ["-DOCSTART- -X- O", ""]
    for words, tags in sentences:
        lines += [f"{word} _ {tag}" for word, tag in zip(words, tags)] + [""]
    path.write_text("\n".join(lines))
    return path


def write_jsonl(path: Path, sentences: list[Sentence]) -> Path:
    path.write_text("".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in sentences))
    return path
