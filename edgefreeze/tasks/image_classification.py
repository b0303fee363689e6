"""Image classification: one label per image file.

Rows: an image path (relative paths are read from the data file's folder) and a label; an
image folder with one subfolder per class gives the same rows. Training pixels come from
the model's own image processor; the device prepares them from its saved settings with
Pillow and numpy (`edgefreeze.runtime.images`), and every build first checks that the two
agree within 1e-5 on real images of every split. Targets, loss and metrics are text
classification's: one label per example.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoModelForImageClassification

from edgefreeze.errors import ConfigError
from edgefreeze.runtime.images import ImageFile, Preprocessing, read_image
from edgefreeze.tasks.base import Head, MissingValue
from edgefreeze.tasks.encoding import EncodedImages
from edgefreeze.tasks.registry import register_task
from edgefreeze.tasks.text_classification import TextClassification

PIXEL_TOLERANCE = 1e-5  # device pixels against the processor's
ENCODE_CHUNK = 256  # images decoded at once


def _vit_head(model: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """ViT: the final layer norm, then the classifier on the [CLS] row."""
    return cast(torch.Tensor, model.classifier(model.vit.layernorm(hidden)[:, 0]))


def _pooled_cnn_head(model: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """ResNet: average pooling over every position (the rows), then the classifier."""
    return cast(torch.Tensor, model.classifier(hidden.mean(dim=1)))


@register_task
class ImageClassification(TextClassification):
    name = "image-classification"
    model_class = AutoModelForImageClassification
    export_task = "image-classification"
    inputs = "image"
    columns = ("path", "label")
    head_rows = 1
    heads = {
        "vit": Head(("vit.layernorm", "classifier"), _vit_head),
        "resnet": Head(("resnet.pooler", "classifier"), _pooled_cnn_head, lambda config: None),
    }

    def example(
        self, row: dict[str, Any], input_column: str, target_column: str
    ) -> tuple[str, str]:
        path, label = row.get(input_column), row.get(target_column)
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"{input_column!r} is {type(path).__name__} {path!r}, not a path")
        if path is None or not str(path).strip():
            raise MissingValue(input_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise MissingValue(target_column)
        return str(path).strip(), str(label).strip()

    def resolve(self, example: str, folder: Path | None) -> ImageFile:
        path = Path(example)
        if folder is not None and not path.is_absolute():
            path = folder / path
        if not path.is_file():
            raise ValueError(f"no image file {path}")
        try:
            return ImageFile.at(path)
        except OSError as exc:
            raise ValueError(f"cannot read image {path}: {exc.strerror}") from None

    def example_key(self, example: ImageFile) -> str:
        return example.sha256

    # Images in, not texts: the one place this task is not text classification's.
    def encode(  # type: ignore[override]
        self, processor: Any, inputs: Sequence[ImageFile], max_length: int
    ) -> EncodedImages:
        """Pixels of each image from the model's image processor (max_length does not
        apply), a chunk of images decoded at a time; then the device's preparation is
        checked against the processor's on the images most likely to tell them apart."""
        pixels: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        for start in range(0, len(inputs), ENCODE_CHUNK):
            images = [_read(example) for example in inputs[start : start + ENCODE_CHUNK]]
            sizes += [image.size for image in images]
            try:
                batch = processor(images=images, return_tensors="np")["pixel_values"]
            except ValueError as exc:  # ragged outputs cannot stack
                raise ConfigError(
                    f"model: {type(processor).__name__} gives images of "
                    f"different sizes ({exc}); the model needs one size"
                ) from None
            pixels += [np.asarray(p, dtype=np.float32) for p in batch]
        if len({p.shape for p in pixels}) > 1:
            raise ConfigError(
                f"model: {type(processor).__name__} gives images of different "
                f"sizes {sorted({p.shape for p in pixels})[:3]}; the model "
                "needs one size"
            )
        chosen = _telling(sizes)
        check_device_pixels(
            processor, [_read(inputs[i]) for i in chosen], [pixels[i] for i in chosen]
        )
        return EncodedImages({"pixel_values": pixels})


def _read(example: ImageFile) -> Any:
    try:
        return read_image(example)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None


def _telling(sizes: list[tuple[int, int]]) -> list[int]:
    """Which images the device check uses: the first, the smallest, the most portrait
    and the most landscape (where resizing, cropping and padding differ most)."""
    if not sizes:
        return []
    indices = range(len(sizes))
    return sorted(
        {
            0,
            min(indices, key=lambda i: sizes[i][0] * sizes[i][1]),
            max(indices, key=lambda i: sizes[i][1] / sizes[i][0]),
            max(indices, key=lambda i: sizes[i][0] / sizes[i][1]),
        }
    )


def check_device_pixels(processor: Any, images: list[Any], expected: list[np.ndarray]) -> None:
    """The device's pixels (`Preprocessing`) must be the processor's: a processor with
    steps the device does not reproduce would ship a model fed other pixels than it was
    trained and gated on."""
    name = type(processor).__name__
    try:
        device = Preprocessing.from_settings(processor.to_dict())
        error = max(
            (
                float(np.max(np.abs(device.pixels(image) - want)))
                for image, want in zip(images, expected)
            ),
            default=0.0,
        )
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"model: the device cannot prepare images as {name} does ({exc})"
        ) from None
    if not error <= PIXEL_TOLERANCE:
        raise ConfigError(
            f"model: the device's preparation of images differs from {name}'s "
            f"by up to {error:.3g}; this image processor is not supported yet"
        )
