"""An image as the model's pixels, on the device: Pillow and numpy, no torch, no transformers.

The settings are the image processor's own `preprocessor_config.json`, which the bundle
carries. The steps follow transformers' (slow, Pillow-based) processors: convert to RGB,
resize with Pillow's filter, crop the centre, scale to [0, 1], normalize per channel. The
build checks that this reproduces the processor the model was trained with on real
training images (`edgefreeze.tasks.image_classification`), so a processor whose steps
differ is refused there, not shipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PREPROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class ImageFile:
    """An image named by its path and identified by its content: what training, the
    activation cache and the data fingerprints key it by. A path-like, so anything that
    opens a file takes it."""

    path: str
    sha256: str

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> ImageFile:
        return cls(str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest())

    def __fspath__(self) -> str:
        return self.path


# Decoding reads the whole image into memory (3 bytes a pixel) before any resize: a bound
# of our own, under Pillow's (which only warns up to 179 megapixels), refuses a file that
# would take gigabytes, in one line, before it is decoded. A 48-megapixel phone photo fits.
MAX_PIXELS = 64_000_000


def read_image(source: str | os.PathLike[str]) -> Any:
    """The image at `source` as 8-bit RGB (a PIL image), turned upright as its EXIF
    orientation says (a phone's photo as people see it); 16-bit grey scaled to 8 bits
    (Pillow's own conversion would clip it to white). One-line errors for a missing, an
    unreadable, a floating-point or an over-large (`MAX_PIXELS`) file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(source)
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: ours is the bound
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            width, height = opened.size  # from the header: nothing is decoded yet
            if width * height > MAX_PIXELS:
                raise ValueError(
                    f"image {path} is {width} x {height} pixels, over "
                    f"{MAX_PIXELS // 1_000_000} megapixels; scale it down first"
                )
            image = ImageOps.exif_transpose(opened)
            if image.mode.startswith("I;16"):
                grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
                image = Image.fromarray(grey, mode="L")
            elif image.mode in ("I", "F"):
                kind = "float" if image.mode == "F" else "integer"
                raise ValueError(
                    f"image {path} has 32-bit {kind} pixels; convert it to 8 or 16 bits"
                )
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"no image file {path}") from None
    except Image.DecompressionBombError:
        raise ValueError(
            f"image {path} is over {MAX_PIXELS // 1_000_000} megapixels; scale it down first"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


@dataclass(frozen=True)
class Preprocessing:
    """The steps of a saved image processor that the device applies (see the module)."""

    size: dict[str, int] | None  # height+width (a warp) or shortest_edge; None: no resize
    resample: int
    crop: tuple[int, int] | None  # (height, width) of the centre crop
    crop_pct: float | None  # ConvNeXt-style: resize the short edge to size / crop_pct first
    scale: float | None
    mean: np.ndarray | None
    std: np.ndarray | None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Preprocessing:
        size = settings.get("size") if settings.get("do_resize", True) else None
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if size is not None and (
            not ({"height", "width"} <= set(size) or "shortest_edge" in size)
            or "longest_edge" in size
        ):
            raise ValueError(
                f"image processor size {size} is not supported on the device "
                "(height and width, or shortest_edge alone)"
            )
        crop = None
        if settings.get("do_center_crop") and settings.get("crop_size"):
            crop_size = settings["crop_size"]
            crop = (
                (crop_size, crop_size)
                if isinstance(crop_size, int)
                else (crop_size["height"], crop_size["width"])
            )
        crop_pct = settings.get("crop_pct") if size and "shortest_edge" in size else None
        normalize = settings.get("do_normalize", True)
        return cls(
            size=size,
            resample=int(settings.get("resample", 2)),
            crop=crop,
            crop_pct=crop_pct,
            scale=settings.get("rescale_factor", 1 / 255)
            if settings.get("do_rescale", True)
            else None,
            mean=np.array(settings["image_mean"], dtype=np.float32) if normalize else None,
            std=np.array(settings["image_std"], dtype=np.float32) if normalize else None,
        )

    @classmethod
    def from_folder(cls, folder: Path) -> Preprocessing:
        return cls.from_settings(json.loads((folder / PREPROCESSOR).read_text()))

    def pixels(self, image: Any) -> np.ndarray:
        """An RGB PIL image as (3, height, width) float32 pixels."""
        image = self._resized(image)
        if self.crop is not None:
            image = _centre_crop(image, *self.crop)
        values: npt.NDArray[np.floating[Any]] = np.asarray(
            image, dtype=np.float32 if self.scale is None else np.float64
        )
        if self.scale is not None:
            values = (values * self.scale).astype(np.float32)
        if self.mean is not None:
            values = (values - self.mean) / self.std
        return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)

    def _resized(self, image: Any) -> Any:
        if self.size is None:
            return image
        if "shortest_edge" not in self.size:
            return image.resize((self.size["width"], self.size["height"]), self.resample)
        edge = self.size["shortest_edge"]
        if self.crop_pct is not None and edge >= 384:  # ConvNeXt warps at 384 and above
            return image.resize((edge, edge), self.resample)
        short = int(edge / self.crop_pct) if self.crop_pct is not None else edge
        width, height = image.size
        if width <= height:
            target = (short, int(short * height / width))
        else:
            target = (int(short * width / height), short)
        image = image.resize(target, self.resample)
        return _centre_crop(image, edge, edge) if self.crop_pct is not None else image


def _centre_crop(image: Any, height: int, width: int) -> Any:
    """transformers' centre crop: the top-left corner rounds down; an image smaller than
    the crop is first centred on black (its padding rounds up)."""
    if image.height < height or image.width < width:
        from PIL import Image

        canvas = Image.new(image.mode, (max(width, image.width), max(height, image.height)))
        canvas.paste(
            image,
            (
                math.ceil((canvas.width - image.width) / 2),
                math.ceil((canvas.height - image.height) / 2),
            ),
        )
        image = canvas
    top, left = (image.height - height) // 2, (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))
