"""What an activation depends on, as digests: the key set, and the per-example key.

An activation of the frozen stem is a pure function of the stem's weights, the tokenizer
or image processor, the task (which decides how an example becomes model inputs),
max_length, the freezing plan's boundary and what of the stem's output the top reads
(every row, or the head's first), the storage dtype, the attention kernel and the
example. All but the example name the key set; the example's content names the entry
(`Task.example_key`). Change any of them and the cache misses, never serves stale values.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from transformers import BaseImageProcessor, PreTrainedTokenizerBase

from edgefreeze.backbones import Backbone, hf_config
from edgefreeze.freeze import FreezePlan

FORMAT_VERSION = 2


def describe_keyset(
    frozen_sha256: str,
    backbone: Backbone,
    processor: PreTrainedTokenizerBase | BaseImageProcessor,
    task: str,
    max_length: int,
    plan: FreezePlan,
    dtype: str,
) -> tuple[str, dict[str, Any]]:
    """(key set digest, its human-readable description); `frozen_sha256` digests every
    frozen tensor, the stem's among them (`edgefreeze.freeze.frozen_digest`)."""
    description = {
        "format": FORMAT_VERSION,
        "model_type": hf_config(backbone.model).model_type,
        "attention": hf_config(backbone.model)._attn_implementation,
        "frozen_sha256": frozen_sha256,
        **processor_digest(processor),
        "task": task,  # how examples become model inputs (text, word lists, images)
        "max_length": max_length,
        **plan.cache_key(),
        "depth": backbone.depth,
        "dtype": dtype,
        "torch": torch.__version__.split("+")[0],
    }
    keyset = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
    return keyset, description


def processor_digest(processor: PreTrainedTokenizerBase | BaseImageProcessor) -> dict[str, str]:
    """The tokenizer's full state, or the image processor's settings, as a digest."""
    if isinstance(processor, PreTrainedTokenizerBase):
        return {
            "tokenizer_sha256": hashlib.sha256(
                processor.backend_tokenizer.to_str().encode()
            ).hexdigest()
        }
    return {
        "image_processor_sha256": hashlib.sha256(processor.to_json_string().encode()).hexdigest()
    }
