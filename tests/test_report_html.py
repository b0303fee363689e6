"""report.html, as a person opens it: headless Chromium (Debian's `chromium`) renders the
smoke bundle's report; the screenshot must show the charts, and the page must need
nothing from the network."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.conftest import chromium_binary

CHARTS = (
    "chart-metric",
    "chart-size",
    "chart-latency",
    "chart-loss",
    "chart-validation",
    "confusion-pytorch",
    "confusion-fp32",
    "confusion-int8",
)
SERIES_BLUE = (0x32, 0x66, 0xCC)  # the first series' colour (svg.COLOURS[0])


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium (skipped or failed where it is missing: `chromium_binary`)."""
    binary = chromium_binary()
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def page(smoke):
    path = smoke.bundle / "report.html"
    manifest = json.loads((smoke.bundle / "manifest.json").read_text())
    assert "report.html" in manifest["files"]  # sealed with the bundle
    return path, path.read_text(), manifest


def test_the_report_needs_nothing_from_outside(page):
    _, html, _ = page
    assert "<script" not in html
    assert re.findall(r"(?:src|href)=", html) == []
    assert set(re.findall(r"https?://[^\"' )]+", html)) == {"http://www.w3.org/2000/svg"}


def test_chromium_draws_every_chart_from_the_manifest(page, tmp_path):
    path, _, manifest = page
    dom = chromium("--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for chart in CHARTS:
        assert f'id="{chart}"' in dom.stdout, chart
    # The loss curve has a point per training step; the confusion matrix counts every row.
    loss = re.search(r'id="chart-loss".*?points="([^"]+)"', dom.stdout, re.S).group(1)
    assert (
        len(loss.split())
        == len(manifest["training"]["step_losses"])
        == manifest["training"]["steps"]
    )
    int8 = manifest["confusion"]["int8"]
    assert sum(map(sum, int8)) == manifest["data"]["splits"]["test"]["rows"]
    correct = sum(int8[i][i] for i in range(len(int8))) / sum(map(sum, int8))
    assert correct == pytest.approx(manifest["metrics"]["int8"]["accuracy"])

    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1280,2600", path.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    inked = (pixels.sum(axis=2) < 600).mean()  # not near-white
    assert inked > 0.01, f"the screenshot is blank ({inked:.2%} inked)"
    blue = (np.abs(pixels - SERIES_BLUE).sum(axis=2) < 30).sum()
    assert blue > 500, "no chart series drawn in the screenshot"
