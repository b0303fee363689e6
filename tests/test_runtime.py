"""The device side: a verified bundle, predictions without torch, tampering refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgefreeze.runtime import BundleError, Predictor, session_options
from tests.conftest import ROOT, run_cli

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "optimum"):
                raise ImportError(f"{name} is not on this device")
    sys.meta_path.insert(0, Block())
""")


def test_runtime_predicts_without_torch_or_transformers(smoke_build):
    bundle, _ = smoke_build
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        from edgefreeze.runtime import Predictor
        predictions = Predictor({str(bundle)!r}).predict(["a wonderful film", "a dull mess"])
        assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules)
        print(json.dumps([p.label for p in predictions]))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # The labels this process, with torch loaded, gets from the same bundle.
    here = Predictor(bundle).predict(["a wonderful film", "a dull mess"])
    assert json.loads(result.stdout) == [p.label for p in here]

    cli = BLOCK_TORCH + "from edgefreeze.cli import main\nmain()\n"
    result = subprocess.run(
        [sys.executable, "-c", cli, "predict", str(bundle), "--json", "a wonderful film"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["label"] == here[0].label
    assert shown["probabilities"] == pytest.approx(here[0].probabilities, abs=1e-6)


def test_predictions_match_the_gated_int8_model(smoke_build):
    bundle, _ = smoke_build
    predictor = Predictor(bundle)
    texts = ["an absolute joy from start to finish", "lifeless and boring"]
    predictions = predictor.predict(texts)
    logits = np.concatenate([predictor.outputs(text) for text in texts])
    assert [p.label for p in predictions] == [predictor.bundle.labels[i] for i in logits.argmax(1)]
    for p in predictions:
        assert abs(sum(p.probabilities.values()) - 1) < 1e-6


def test_tampered_model_is_refused(smoke_build, tmp_path):
    bundle, _ = smoke_build
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 does not match"):
        Predictor(copy)
    result = run_cli("predict", str(copy), "hello")
    assert result.exit_code == 2 and "altered" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    Predictor(copy, "fp32")  # the untouched fp32 model still verifies


def test_bundle_that_failed_the_gate_is_refused(smoke_build, tmp_path):
    bundle, _ = smoke_build
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["gate"]["passed"] = False
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="gate did not pass"):
        Predictor(copy)


@pytest.mark.parametrize("file_name", ["model.onnx", "model.int8.onnx"])
def test_optimum_loads_the_bundle_and_agrees(smoke_build, file_name):
    """Interop: Optimum's ORTModelForSequenceClassification reads the bundle as it is."""
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    bundle, _ = smoke_build
    predictor = Predictor(bundle, "int8" if "int8" in file_name else "fp32")
    options = session_options(config=predictor.bundle.session_config)  # as the manifest says
    model = ORTModelForSequenceClassification.from_pretrained(
        bundle, file_name=file_name, session_options=options
    )
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    texts = [
        "an absolute joy",
        "lifeless, boring and far too long",
        "it was fine, I guess",
        "the best thing this director has made",
    ]
    for text in texts:  # one at a time, as the gate and a device run them
        encoded = tokenizer(
            [text], return_tensors="np", truncation=True, max_length=predictor.bundle.max_length
        )
        logits = model(**encoded).logits
        np.testing.assert_allclose(np.asarray(logits), predictor.outputs(text), atol=1e-5)
        assert model.config.id2label[int(np.argmax(logits))] == predictor.predict([text])[0].label


def test_installing_for_a_device_pulls_no_torch():
    """`pip install edgefreeze[edge]` must not bring torch, transformers or optimum."""
    from importlib.metadata import requires

    requirements = requires("edgefreeze") or []
    base_or_edge = [
        r for r in requirements if "extra ==" not in r or "'edge'" in r or '"edge"' in r
    ]
    names = {
        r.split(";")[0]
        .split("[")[0]
        .split("<")[0]
        .split(">")[0]
        .split("=")[0]
        .split("~")[0]
        .strip()
        .lower()
        for r in base_or_edge
    }
    assert names and not names & {"torch", "transformers", "optimum", "optimum-onnx"}
    assert {"onnxruntime", "tokenizers", "numpy"} <= names


def test_bench_reports_every_model(smoke_build):
    bundle, _ = smoke_build
    result = run_cli(
        "bench", str(bundle), "--runs", "10", "--threads", "1", "--rounds", "2", "--json"
    )
    assert result.exit_code == 0, result.stderr
    payload = result.json()
    assert payload["rounds"] == 2
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = manifest["files"]
    for name, weights in (
        ("int8", "model.int8.onnx"),
        ("fp32", "model.onnx"),
        ("pytorch", "model.onnx"),
    ):
        entry = payload[name]
        assert 0 < entry["p50_ms"] <= entry["p95_ms"] <= entry["p99_ms"]
        # Each model ran in a process of its own that held its weights: its peak memory is
        # more than the weights' file, in bytes (not the kilobytes ru_maxrss counts in).
        assert entry["peak_rss_bytes"] > files[weights]["size"]
        assert entry["throughput_per_s"] > 0
    assert payload["int8"]["size_bytes"] == files["model.int8.onnx"]["size"]
    assert payload["fp32"]["size_bytes"] == files["model.onnx"]["size"]
    assert payload["int8_speedup_p50"] == {
        name: pytest.approx(payload[name]["p50_ms"] / payload["int8"]["p50_ms"], rel=1e-12)
        for name in ("fp32", "pytorch")
    }


def test_latency_is_timed_after_a_warm_up_on_every_run():
    """What a latency figure means: `runs` timed calls after untimed warm-up calls."""
    from edgefreeze.runtime.bench import timed_ms

    calls = []
    times = timed_ms(calls.append, "x", runs=40)
    assert len(times) == 40 and len(calls) == 45 and (times >= 0).all()
