"""Carry a bundle's trained top into a new training run (`retrain --from BUNDLE`).

Every bundle keeps its trainable parameters in `trainable.safetensors` (the frozen rest is
the pretrained model, already on the machine). A retrain that starts from them needs
fewer epochs: with the stem cached, its cost is the new rows' stem pass plus those epochs.
The bundle must have been trained on the same frozen stem (digest of every frozen tensor,
so a hub model of the same shape but other weights is refused), task, labels and plan.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edgefreeze.errors import BundleError, ConfigError
from edgefreeze.freeze import FreezePlan, PlannedModel, describe_plan
from edgefreeze.runtime import Bundle
from edgefreeze.runtime.manifest import WarmStartRecord

WEIGHTS = "trainable.safetensors"


def save_trainable(model: torch.nn.Module, plan: FreezePlan, folder: Path) -> Path:
    """What the plan trains (every stage), by parameter name."""
    tensors = {name: p.detach().to("cpu").contiguous() for name, p in _trained(model, plan).items()}
    save_file(tensors, str(folder / WEIGHTS))
    return folder / WEIGHTS


def _trained(model: torch.nn.Module, plan: FreezePlan) -> dict[str, torch.nn.Parameter]:
    mine = {id(p) for p in plan.parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in mine}


def load_trainable(
    planned: PlannedModel, task: str, bundle_path: Path, label_names: list[str]
) -> WarmStartRecord:
    """Copy the bundle's trained parameters into the planned model; they must fit exactly.
    Returns the manifest's `training.warm_start`."""
    model, plan = planned.loaded.model, planned.plan
    try:
        bundle = Bundle(bundle_path)
    except BundleError as exc:
        raise ConfigError(f"--from: {exc}") from None
    manifest = bundle.manifest
    where = f"--from {bundle_path}"
    if manifest.task.name != task:
        raise ConfigError(
            f"{where}: trained for {manifest.task.name}, this pipeline's task is {task}"
        )
    if manifest.data.label_names != label_names:
        raise ConfigError(
            f"{where}: labels {manifest.data.label_names} differ from the data's {label_names}"
        )
    trained = manifest.training.freeze
    if trained.settings != plan.settings():
        raise ConfigError(
            f"{where}: trained with freezing plan "
            f"{describe_plan(trained.settings)}, this pipeline's is "
            f"{plan.describe()}"
        )
    if manifest.model.frozen_sha256 is None:
        raise ConfigError(
            f"{where}: built by edgefreeze {manifest.edgefreeze_version}, which "
            "did not record its frozen weights' digest; build without --from once"
        )
    if manifest.model.frozen_sha256 != planned.frozen_sha256:
        raise ConfigError(
            f"{where}: built on another frozen stem (other pretrained weights "
            "or revision) than this pipeline's model"
        )
    tensors = load_file(str(bundle.verified(WEIGHTS)))
    if set(tensors) != set(_trained(model, plan)):
        raise ConfigError(f"{where}: {WEIGHTS} does not hold this model's trainable parameters")
    model.load_state_dict(tensors, strict=False)
    return WarmStartRecord(bundle=str(bundle_path), sha256=manifest.files[WEIGHTS].sha256)
