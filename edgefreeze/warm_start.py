"""Carry a bundle's trained top into a new training run (`retrain --from BUNDLE`).

Every bundle keeps its trainable parameters in `trainable.safetensors` (the frozen rest is
the pretrained model, already on the machine). A retrain that starts from them needs
fewer epochs: with the stem cached, its cost is the new rows' stem pass plus those epochs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgefreeze.backbones import LoadedModel
from edgefreeze.errors import ConfigError
from edgefreeze.runtime import Bundle, BundleError

WEIGHTS = "trainable.safetensors"


def save_trainable(model: torch.nn.Module, folder: Path) -> Path:
    tensors = {name: p.detach().to("cpu").contiguous()
               for name, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(folder / WEIGHTS))
    return folder / WEIGHTS


def load_trainable(loaded: LoadedModel, bundle_path: Path, label_names: list[str],
                   trainable_layers: int) -> dict[str, str]:
    """Copy the bundle's trained parameters into `loaded.model`; they must fit exactly."""
    try:
        bundle = Bundle(bundle_path)
    except BundleError as exc:
        raise ConfigError(f"--from: {exc}") from None
    manifest = bundle.manifest
    if manifest["model"]["weights_sha256"] != loaded.source["weights_sha256"]:
        raise ConfigError(f"--from {bundle_path}: built on other pretrained weights than "
                          "this pipeline's model")
    if manifest["data"]["label_names"] != label_names:
        raise ConfigError(f"--from {bundle_path}: labels {manifest['data']['label_names']} "
                          f"differ from the data's {label_names}")
    if manifest["settings"]["freeze"]["trainable_layers"] != trainable_layers:
        raise ConfigError(f"--from {bundle_path}: trained {manifest['settings']['freeze']['trainable_layers']}"
                          f" layers, this pipeline trains {trainable_layers}")
    tensors = load_file(str(bundle.verified(WEIGHTS)))
    expected = {name for name, p in loaded.model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        raise ConfigError(f"--from {bundle_path}: {WEIGHTS} does not hold this model's "
                          "trainable parameters")
    loaded.model.load_state_dict(tensors, strict=False)
    return {"bundle": str(bundle_path), "sha256": manifest["files"][WEIGHTS]["sha256"]}
