"""Real images for the image tests: scikit-learn's bundled handwritten digits (8x8 grey
scans of 1,797 digits by 43 writers, UCI), written as PNG files, and tiny random image
checkpoints saved with their own image processors, as a hub checkpoint is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    ConvNextImageProcessor,
    ViTImageProcessor,
)

SIDE = 32  # the tiny checkpoints' input size


def write_digit_folder(folder: Path, per_class: int, classes: int = 10, start: int = 0) -> Path:
    """An image folder (one subfolder per digit) of `per_class` scans of each of the first
    `classes` digits, from each digit's `start`th scan."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(classes):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(digits.target == label)[start : start + per_class]
        for row in rows:
            pixels = (digits.images[row] * 255 / 16).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / str(label) / f"{row:04d}.png")
    return folder


def tiny_image_checkpoint(model_type: str, folder: Path, labels: int = 10) -> Path:
    """A randomly initialised image classifier of `model_type` ("vit" or "resnet") and its
    family's usual image processor (ResNet checkpoints ship ConvNeXt's)."""
    if model_type == "vit":
        config = AutoConfig.for_model(
            "vit",
            image_size=SIDE,
            patch_size=8,
            num_hidden_layers=4,
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=128,
            num_labels=labels,
        )
        processor = ViTImageProcessor(size={"height": SIDE, "width": SIDE})
    else:
        config = AutoConfig.for_model(
            "resnet",
            embedding_size=16,
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            num_labels=labels,
        )
        processor = ConvNextImageProcessor(size={"shortest_edge": SIDE}, crop_pct=0.875)
    AutoModelForImageClassification.from_config(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
