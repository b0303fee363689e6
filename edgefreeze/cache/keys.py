"""What an activation depends on, as digests: the key set, and the per-text key.

An activation of the frozen stem is a pure function of the stem's weights, the tokenizer,
max_length, the boundary depth, what is kept (every token or the first only), the storage
dtype, the attention kernel and the text. All but the text name the key set; the text
names the entry. Change any of them and the cache misses, never serves stale values.
"""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import PreTrainedTokenizerBase

from edgefreeze.backbones import Backbone
from edgefreeze.freeze import top_modules

FORMAT_VERSION = 1


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def stem_digest(backbone: Backbone, boundary: int) -> str:
    """sha256 over every tensor of the model that is not in the trainable top."""
    top = {id(t) for m in top_modules(backbone, backbone.depth - boundary)
           for t in [*m.parameters(), *m.buffers()]}
    digest = hashlib.sha256()
    state = backbone.model.state_dict(keep_vars=True)
    for name in sorted(state):
        tensor = state[name]
        if id(tensor) in top:
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_keyset(backbone: Backbone, tokenizer: PreTrainedTokenizerBase, max_length: int,
                    boundary: int, dtype: str) -> tuple[str, dict]:
    """(key set digest, its human-readable description)."""
    description = {
        "format": FORMAT_VERSION,
        "model_type": backbone.model.config.model_type,
        "attention": backbone.model.config._attn_implementation,
        "stem_sha256": stem_digest(backbone, boundary),
        "tokenizer_sha256": hashlib.sha256(
            tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "max_length": max_length,
        "boundary": boundary,
        "depth": backbone.depth,
        "kept": "first-token" if boundary == backbone.depth else "all-tokens",
        "dtype": dtype,
        "torch": torch.__version__.split("+")[0],
    }
    keyset = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
    return keyset, description
