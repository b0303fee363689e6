"""Image classification: the device's pixels against transformers' processors, image
folders and CSVs of paths, the ViT and ResNet adapters split at every boundary, frozen
BatchNorm, and whole builds on real images (scikit-learn's handwritten digits)."""

from __future__ import annotations

import json
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    BitImageProcessor,
    CLIPImageProcessor,
    ConvNextImageProcessor,
    DeiTImageProcessor,
    ViTImageProcessor,
)

from edgefreeze.backbones import backbone_for, load_model
from edgefreeze.cache.features import LiveFeatures
from edgefreeze.context import RunContext
from edgefreeze.data import load_data
from edgefreeze.errors import ConfigError
from edgefreeze.freeze import make_plan
from edgefreeze.progress import Reporter
from edgefreeze.runtime import Bundle, Predictor
from edgefreeze.runtime.bench import inputs as bench_inputs
from edgefreeze.runtime.images import ImageFile, Preprocessing, read_image
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.schema import TrainSpec, load_pipeline
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks import task_for
from edgefreeze.tasks.image_classification import check_device_pixels
from edgefreeze.train.loop import Examples, Splits, train
from tests.conftest import OLD_ORT, run_cli, write_pipeline
from tests.digit_images import SIDE, tiny_image_checkpoint, write_digit_folder

IMAGES = task_for("image-classification")


def _scans(count: int = 3) -> list[Image.Image]:
    """Real images of several shapes: digit scans, alone (8x8), two side by side (16x8)
    and stacked three high (8x24), in colour (each scan in its own channel tint)."""
    images = (load_digits().images * 255 / 16).round().astype(np.uint8)
    shapes = [images[0], np.hstack(images[1:3]), np.vstack(images[3:6])][:count]
    return [Image.fromarray(np.stack([s, 255 - s, s // 2], axis=-1), mode="RGB") for s in shapes]


@pytest.mark.parametrize(
    "processor",
    [
        ViTImageProcessor(size={"height": SIDE, "width": SIDE}),
        ViTImageProcessor(),  # 224 x 224, bilinear: ViT-base's
        ConvNextImageProcessor(size={"shortest_edge": SIDE}, crop_pct=0.875),  # ResNet's
        ConvNextImageProcessor(size={"shortest_edge": 384}),  # a warp, no crop
        CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}),
        CLIPImageProcessor(size={"shortest_edge": 12}, crop_size={"height": 20, "width": 16}),
        DeiTImageProcessor(size={"height": 40, "width": 36}, crop_size={"height": 32, "width": 32}),
        BitImageProcessor(),  # BiT's and DINOv2's: shortest edge 224, bicubic, centre crop
    ],
    ids=[
        "vit-32",
        "vit-224",
        "convnext-crop",
        "convnext-warp",
        "clip",
        "clip-padded",
        "deit",
        "bit",
    ],
)
def test_device_pixels_are_the_processor_s(processor):
    """Pillow + numpy from the saved settings give transformers' pixels within 1e-5."""
    device = Preprocessing.from_settings(json.loads(processor.to_json_string()))
    for image in _scans():
        expected = processor(images=[image], return_tensors="np")["pixel_values"][0]
        got = device.pixels(image)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_files_read_as_people_see_them(tmp_path):
    """16-bit grey scaled to 8 bits (not clipped white), EXIF orientation applied, 32-bit
    float pixels refused in one line."""
    scan = (load_digits().images[0] * 4095 / 16).astype(np.uint16)  # 12-bit values
    Image.fromarray(scan.astype(np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    grey = np.asarray(read_image(tmp_path / "deep.png"))[..., 0]
    np.testing.assert_array_equal(grey, scan >> 8)

    wide = Image.fromarray(np.hstack([load_digits().images[0]] * 2).astype(np.uint8) * 15)
    exif = wide.getexif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    wide.save(tmp_path / "turned.jpg", exif=exif)
    assert read_image(tmp_path / "turned.jpg").size == (8, 16)

    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match="32-bit float pixels; convert it"):
        read_image(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match="shortest_edge alone"):
        Preprocessing.from_settings(
            {
                "size": {"shortest_edge": 8, "longest_edge": 16},
                "image_mean": [0.5] * 3,
                "image_std": [0.5] * 3,
            }
        )


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file whose header claims `width` x `height` pixels (no pixel data follows):
    all a reader sees before it decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")
    )
    return path


# 81 MP: only our bound refuses it; 144: Pillow only warns (twice) and would decode it;
# 400: Pillow refuses it itself, and the line says so in our words.
@pytest.mark.parametrize("side", [9_000, 12_000, 20_000])
def test_an_image_of_too_many_pixels_is_one_line_before_it_is_decoded(tmp_path, side):
    image = png_header(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warning must not get out
        with pytest.raises(ValueError) as refused:
            read_image(image)
    size = "" if side == 20_000 else f" {side} x {side} pixels,"
    assert str(refused.value) == f"image {image} is{size} over 64 megapixels; scale it down first"


def test_a_processor_the_device_cannot_follow_is_refused():
    """A processor with a step the device lacks (here a mirror image) fails the build's
    check instead of shipping a model fed other pixels than it was gated on."""

    class Mirroring(ViTImageProcessor):
        def preprocess(self, images, **kwargs):
            out = super().preprocess(images, **kwargs)
            out["pixel_values"] = [p[:, :, ::-1] for p in out["pixel_values"]]
            return out

    processor = Mirroring(size={"height": SIDE, "width": SIDE})
    images = _scans()
    expected = list(processor(images=images, return_tensors="np")["pixel_values"])
    with pytest.raises(ConfigError, match="differs from Mirroring's"):
        check_device_pixels(processor, images, expected)
    check_device_pixels(
        ViTImageProcessor(size={"height": SIDE, "width": SIDE}),
        images,
        list(
            ViTImageProcessor(size={"height": SIDE, "width": SIDE})(
                images=images, return_tensors="np"
            )["pixel_values"]
        ),
    )


def test_image_folder_and_csv_of_paths(tmp_path):
    """A folder's subfolders are its labels; a CSV's relative paths are read from its own
    folder; an image is keyed by its content, wherever it lies."""
    from edgefreeze.schema import DataSpec

    folder = write_digit_folder(tmp_path / "digits", per_class=6, classes=3)
    (folder / "notes.txt").write_text("not an image")
    (folder / "2" / "readme.md").write_text("not an image either")
    data = load_data(
        DataSpec(
            source=str(folder),
            sample_rows=None,
            split={"group_column": None, "test": 0.5, "validation": 0.0},
        ),
        IMAGES,
        Path,
    )
    assert data.label_names == ["0", "1", "2"]
    assert len(data.train) + len(data.test) == 18
    assert all(isinstance(x, ImageFile) and Path(x.path).is_file() for x in data.train.inputs)

    lists = tmp_path / "lists"
    lists.mkdir()
    rows = [
        f"../digits/{p.parent.name}/{p.name},{'odd' if int(p.parent.name) % 2 else 'even'}"
        for p in sorted(folder.glob("*/*.png"))
    ]
    (lists / "parity.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    data = load_data(
        DataSpec(
            source=str(lists / "parity.csv"),
            sample_rows=None,
            split={"group_column": None, "test": 0.5, "validation": 0.0},
        ),
        IMAGES,
        Path,
    )
    assert data.label_names == ["even", "odd"]
    by_content = {x.sha256: x for x in [*data.train.inputs, *data.test.inputs]}
    copy = tmp_path / "elsewhere.png"
    copy.write_bytes(Path(next(iter(by_content.values())).path).read_bytes())
    assert ImageFile.at(copy).sha256 in by_content


def test_a_missing_image_is_one_line_naming_the_row(tmp_path):
    write_digit_folder(tmp_path / "digits", per_class=4, classes=2)
    checkpoint = tiny_image_checkpoint("vit", tmp_path / "vit", labels=2)
    (tmp_path / "rows.csv").write_text("path,label\ndigits/0/0000.png,0\ndigits/1/gone.png,1\n")
    pipeline = write_pipeline(
        tmp_path,
        {
            "name": "missing",
            "model": str(checkpoint),
            "task": "image-classification",
            "data": {"source": "rows.csv", "sample_rows": None, "split": {"group_column": None}},
        },
    )
    result = run_cli("build", str(pipeline), "--output", str(tmp_path / "out"), "--quiet")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"edgefreeze: error: {tmp_path / 'rows.csv'}:3: no image file "
        f"{tmp_path / 'digits/1/gone.png'} (data.source)"
    ]
    assert not (tmp_path / "out").exists()


def _tiny(model_type: str) -> torch.nn.Module:
    torch.manual_seed(0)
    settings = (
        {
            "image_size": SIDE,
            "patch_size": 8,
            "num_hidden_layers": 4,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "intermediate_size": 37,
        }
        if model_type == "vit"
        else {
            "embedding_size": 8,
            "hidden_sizes": [8, 16, 24, 32],
            "depths": [1, 2, 1, 1],
            "layer_type": "bottleneck",
            "downsample_in_bottleneck": True,
        }
    )
    config = AutoConfig.for_model(model_type, num_labels=3, **settings)
    return AutoModelForImageClassification.from_config(config).eval()


@pytest.mark.parametrize("model_type", ["vit", "resnet"])
def test_stem_then_top_is_the_image_model_s_own_forward(model_type):
    """At every boundary, and head-only from the rows the head keeps."""
    model = _tiny(model_type)
    backbone = backbone_for(model, IMAGES)
    inputs = {"pixel_values": torch.randn(3, 3, SIDE, SIDE)}
    with torch.no_grad():
        expected = model(**inputs).logits
        for boundary in range(backbone.depth + 1):
            hidden = backbone.stem(inputs, boundary)
            assert hidden.shape[-1] == backbone.width(boundary)
            got = backbone.top(hidden, backbone.rows_mask(inputs, hidden), boundary)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        kept = backbone.stem(inputs, backbone.depth)[:, : backbone.head_rows]
        head_only = backbone.top(kept, None, backbone.depth)
        torch.testing.assert_close(head_only, expected, atol=1e-5, rtol=1e-5)
    assert backbone.head_rows == (1 if model_type == "vit" else None)


def test_frozen_batchnorm_keeps_its_statistics_while_the_top_s_move():
    """A frozen ResNet stage runs in eval mode in training: its BatchNorm statistics
    stay; the trainable stages' update as they train."""
    backbone = backbone_for(_tiny("resnet"), IMAGES)
    plan = make_plan(TopKSpec(trainable_layers=2), backbone)
    stages = backbone.layer_stack()

    def statistics(stage):
        return [
            m.running_mean.clone() for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)
        ]

    before = [statistics(stage) for stage in stages]
    pixels = torch.randn(24, 3, SIDE, SIDE).numpy()
    from edgefreeze.tasks.encoding import EncodedImages

    features = LiveFeatures(EncodedImages({"pixel_values": list(pixels)}), backbone, plan)
    targets = np.arange(24) % 3
    train(
        backbone,
        plan,
        IMAGES,
        Splits(Examples(features, targets)),
        TrainSpec(epochs=1, batch_size=8, device="cpu"),
        RunContext(Reporter(quiet=True)),
    )
    after = [statistics(stage) for stage in stages]
    for index in range(plan.boundary):
        assert all(torch.equal(a, b) for a, b in zip(before[index], after[index])), index
    for index in range(plan.boundary, len(stages)):
        assert not any(torch.equal(a, b) for a, b in zip(before[index], after[index])), index


@pytest.mark.build
@pytest.mark.parametrize("model_type", ["vit", "resnet"])
def test_image_model_builds_gates_and_runs_on_the_device(tmp_path, model_type):
    """The whole path on real images: cache, train, composed and split export, int8 (a
    CNN's convolutions too), the gate, the bundle; the int8 model run by the device
    runtime on the held-out images reproduces the manifest's accuracy; a rebuild is
    served by the cache and ships the same stem (a delta update)."""
    folder = write_digit_folder(tmp_path / "digits", per_class=30)
    checkpoint = tiny_image_checkpoint(model_type, tmp_path / model_type)
    pipeline = write_pipeline(
        tmp_path,
        {
            "name": f"digits-{model_type}",
            "model": str(checkpoint),
            "task": "image-classification",
            "data": {"source": "digits", "sample_rows": None, "split": {"group_column": None}},
            "freeze": {"trainable_layers": 2},
            "train": {"epochs": 8, "lr_top": 1e-3, "lr_head": 1e-2},
            "export": {"split": True},
            "gate": {"max_metric_drop": 0.1, "min_agreement": 0.8, "max_int8_size_share": 1.0},
        },
    )
    cache = ["--cache-dir", str(tmp_path / "cache")]
    bundle = tmp_path / "bundle"
    result = run_cli("build", str(pipeline), "--output", str(bundle), "--quiet", "--json", *cache)
    assert result.exit_code == 0, result.stderr + result.stdout
    assert {"preprocessor_config.json", "model.int8.onnx", "stem.onnx", "top.onnx"} <= {
        p.name for p in bundle.iterdir()
    }
    manifest = json.loads((bundle / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["fp32"]["max_logit_error"] < 1e-4
    assert metrics["split-fp32"]["max_logit_error"] < 1e-4
    # Ten classes on 90 held-out scans: guessing gets 9 right and 18 or more with a chance
    # under 1 %; the tiny models get 32 (ViT) and 84 (ResNet).
    assert metrics["pytorch"]["accuracy"] > 0.2
    # Every weight matrix and convolution kernel is int8 except, for ViT, the patch
    # embedding (a convolution its int8 operators leave alone) and the position table: those
    # keep its tiny int8 file at 46 % of fp32 (ResNet's is at 28 %).
    graph = onnx.load(str(bundle / "model.int8.onnx")).graph
    large_fp32 = {
        init.name
        for init in graph.initializer
        if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= 256
    }
    assert large_fp32 == (
        {"vit.embeddings.position_embeddings", "vit.embeddings.patch_embeddings.projection.weight"}
        if model_type == "vit"
        else set()
    )
    assert manifest["sizes"]["int8"] < manifest["sizes"]["fp32"]
    assert manifest["shape_check"]["fp32"]["sequence_lengths"] == []

    spec = load_pipeline(pipeline)
    test = load_data(spec.spec.data, IMAGES, spec.resolve).test
    predictions = Predictor(bundle).predict([x.path for x in test.inputs])
    labels = manifest["data"]["label_names"]
    accuracy = np.mean([labels.index(p.label) == t for p, t in zip(predictions, test.targets)])
    assert accuracy == pytest.approx(metrics["int8"]["accuracy"], abs=1e-9)

    shown = run_cli("predict", str(bundle), str(folder / "3" / "0003.png"), "--json")
    assert json.loads(shown.stdout)["image"] == str(folder / "3" / "0003.png")
    assert bench_inputs(Bundle(bundle), 4, 32)["pixel_values"].shape == (4, 3, SIDE, SIDE)

    # A fleet's older ONNX Runtime (1.20.1) runs it too: ResNet's int8 convolutions take u8
    # weights, since that runtime has no ConvInteger for s8 ones.
    older = run_cli(
        "verify-target",
        str(bundle),
        str(pipeline),
        "--python",
        sys.executable,
        "--path",
        str(OLD_ORT),
        "--json",
    )
    assert older.exit_code == 0, older.stderr
    (check,) = Manifest.load(bundle / "manifest.json").targets
    assert check.onnxruntime == "1.20.1" and check.rows == len(test.inputs)

    new = write_digit_folder(tmp_path / "new", per_class=2, start=30)
    again = tmp_path / "again"
    result = run_cli(
        "retrain",
        str(pipeline),
        "--add",
        str(new),
        "--epochs",
        "1",
        "--output",
        str(again),
        "--quiet",
        "--json",
        *cache,
    )
    assert result.exit_code == 0, result.stderr + result.stdout
    rebuilt = json.loads((again / "manifest.json").read_text())
    assert rebuilt["cache"]["misses"] == 20  # only the new images pass the frozen stem
    assert rebuilt["cache"]["hits"] == manifest["cache"]["misses"]
    assert (again / "stem.onnx").read_bytes() == (bundle / "stem.onnx").read_bytes()


def test_what_an_image_family_cannot_do_is_one_line(tmp_path):
    """Non-square ResNet feature maps, PEFT on convolutions, a folder of images for a text
    task."""
    from edgefreeze.schema import DataSpec, PipelineSpec

    backbone = backbone_for(_tiny("resnet"), IMAGES)
    with pytest.raises(ConfigError, match="needs square images; .* 70 positions"):
        backbone.from_rows(torch.zeros(1, 70, 8))
    peft = PipelineSpec.model_validate(
        {"name": "x", "model": "x", "data": {"source": "x"}, "peft": {"method": "lora"}}
    ).peft
    with pytest.raises(ConfigError, match="no linear modules to attach to"):
        make_plan(TopKSpec(trainable_layers=2), backbone, peft)
    folder = write_digit_folder(tmp_path / "digits", per_class=3, classes=2)
    with pytest.raises(
        ConfigError,
        match="a folder of images is data for image-classification, not text-classification",
    ):
        load_data(DataSpec(source=str(folder)), task_for("text-classification"), Path)


def test_a_text_task_on_an_image_model_is_one_line(tmp_path):
    checkpoint = tiny_image_checkpoint("vit", tmp_path / "vit", labels=2)
    with pytest.raises(
        ConfigError,
        match=f"model: {checkpoint} is an image model \\(vit\\); "
        "task text-classification needs a text model",
    ):
        load_model(str(checkpoint), task_for("text-classification"), ["a", "b"], Path, False, 0)
