"""`edgefreeze verify-target`: a bundle run by another interpreter and ONNX Runtime, the
check recorded in its manifest. The arm64 run under qemu-user is a documented command
(benchmarks/targets.py, figures in docs/benchmarks.md); here the targets are this
machine's Python, with today's and with an older ONNX Runtime."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnxruntime
import pytest

from edgefreeze.runtime import Predictor
from edgefreeze.runtime.manifest import Manifest
from tests.conftest import OLD_ORT, chromium_binary, run_cli, write_pipeline
from tests.test_interruptions import held_at, start


@pytest.fixture
def bundle(smoke, tmp_path):
    """A copy of the smoke bundle (the check writes to its manifest)."""
    return shutil.copytree(smoke.bundle, tmp_path / "bundle")


def _verify(bundle, pipeline, *options: str):
    return run_cli(
        "verify-target", str(bundle), str(pipeline), "--python", sys.executable, "--json", *options
    )


def test_the_check_is_recorded_per_runtime_and_the_bundle_still_verifies(bundle, smoke):
    assert OLD_ORT.is_dir(), "make install unpacks the older ONNX Runtime there"
    today = _verify(bundle, smoke.pipeline)
    assert today.exit_code == 0, today.stderr
    older = _verify(bundle, smoke.pipeline, "--path", str(OLD_ORT))
    assert older.exit_code == 0, older.stderr
    again = _verify(bundle, smoke.pipeline, "--rows", "20")  # replaces today's record
    assert again.exit_code == 0, again.stderr

    checks = Manifest.load(bundle / "manifest.json").targets
    assert [(c.onnxruntime, c.rows) for c in checks] == [
        ("1.20.1", 180),
        (onnxruntime.__version__, 20),
    ]
    old, new = checks
    assert new.metrics["agreement"] == 1.0 and new.metrics["max_logit_error"] == 0.0
    assert new.machine == "x86_64" and new.emulated_by is None and new.passed
    assert old.passed and old.metrics["agreement"] >= 0.95
    assert old.metrics["max_logit_error"] > 0.0  # really another runtime's kernels
    assert (
        old.host_metrics["accuracy"]
        == Manifest.load(smoke.bundle / "manifest.json").metrics["int8"]["accuracy"]
    )
    Predictor(bundle).predict(["still a verified bundle"])  # files match the manifest


def test_two_checks_at_once_both_land_in_the_manifest(bundle, smoke):
    """The first run holds inside its read-modify-write of the manifest; the second runs
    its probe meanwhile and must then wait for the bundle's lock: without it, it would
    write its check to the manifest the first has read, and the first's rename would
    drop it."""
    check = [
        "verify-target",
        str(bundle),
        str(smoke.pipeline),
        "--python",
        sys.executable,
        "--rows",  # the race is in the manifest's write, not in how many rows ran
        "20",
        "--json",
    ]
    with held_at("record", *check) as first:
        second = start(*check, "--path", str(OLD_ORT))
        try:
            waited = _waits_for_a_lock(second)
        finally:
            first.send_signal(signal.SIGUSR1)
            first_out, first_err = first.communicate(timeout=120)
            second_out, second_err = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, (first_err, second_err)
    checks = Manifest.load(bundle / "manifest.json").targets
    assert sorted(c.onnxruntime for c in checks) == sorted(["1.20.1", onnxruntime.__version__])
    assert waited, "the second check never waited for the first's"
    Predictor(bundle).predict(["still a verified bundle"])


def _waits_for_a_lock(process: subprocess.Popen, timeout_s: float = 120) -> bool:
    """Whether `process` comes to wait for a file lock (Linux lists waiters in /proc/locks
    with `->`) before it ends or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and str(process.pid) in fields:
                return True
        time.sleep(0.1)
    return False


def test_another_pipeline_is_refused_by_its_held_out_fingerprint(bundle, tmp_path):
    other = write_pipeline(tmp_path, {"data": {"split": {"seed": 1}}})
    result = _verify(bundle, other)
    assert result.exit_code == 2 and "not the one" in result.stderr
    assert Manifest.load(bundle / "manifest.json").targets == []


def test_a_target_that_cannot_run_the_probe_is_one_line(bundle, smoke, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    result = run_cli(
        "verify-target",
        str(bundle),
        str(smoke.pipeline),
        "--python",
        str(tmp_path / "bare" / "bin" / "python"),
    )
    assert result.exit_code == 3, result.stderr
    assert "the target failed to run it" in result.stderr and "numpy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_emulating_a_program_that_is_not_elf_is_exit_2(bundle, smoke, tmp_path):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n")
    result = run_cli(
        "verify-target",
        str(bundle),
        str(smoke.pipeline),
        "--python",
        str(script),
        "--sysroot",
        str(tmp_path),
    )
    assert result.exit_code == 2 and "not an ELF executable" in result.stderr


def test_a_python_that_does_not_exist_is_exit_2(bundle, smoke, tmp_path):
    result = run_cli(
        "verify-target", str(bundle), str(smoke.pipeline), "--python", str(tmp_path / "no-python")
    )
    assert result.exit_code == 2 and "--python" in result.stderr


def test_node_runs_the_bundle_as_the_python_runtime_does(bundle, smoke):
    """transformers.js in Node (`make js` installs it from the lock file): the same token
    ids on every held-out text, long ones truncated as the Python tokenizer truncates
    them; the same predictions; fp32 logits within the gate's bound against PyTorch."""
    manifest = Manifest.load(bundle / "manifest.json")
    assert manifest.data.splits["test"].truncated > 0  # truncation is in what is compared
    assert manifest.javascript["int8"].model_file_name == "model.int8"  # how it loads there
    for form, rows in (("int8", manifest.data.splits["test"].rows), ("fp32", 60)):
        checked = run_cli(
            "verify-target", str(bundle), str(smoke.pipeline), "--node", "--model", form,
            "--rows", str(rows), "--json",
        )  # fmt: skip
        assert checked.exit_code == 0, checked.stderr
        record = checked.json()
        assert record["token_ids_differ"] == 0 and record["metrics"]["agreement"] == 1.0
        assert record["predictions_differ"] == 0 and record["rows"] == rows
        assert record["javascript"].startswith("transformers.js ") and record["python"] is None
        bound = manifest.gate.rules["fp32.max_logit_error"].limit
        assert record["metrics"]["max_logit_error"] <= bound
    recorded = Manifest.load(bundle / "manifest.json").targets
    assert sorted(check.form for check in recorded if check.javascript) == ["fp32", "int8"]

    both = _verify(bundle, smoke.pipeline, "--node")
    assert both.exit_code == 2 and "one of them" in both.stderr


def test_node_names_what_it_cannot_run(split_build):
    split = run_cli(
        "verify-target",
        str(split_build.bundle),
        str(split_build.pipeline),
        "--node",
        "--model",
        "split-int8",
    )
    assert split.exit_code == 2 and "two graphs" in split.stderr


def test_chromium_with_onnx_runtime_web_reads_the_bundle_as_python_does(bundle, smoke):
    """The same comparison in headless Chromium, ONNX Runtime Web's WebAssembly backend,
    on a sample: the same token ids and predictions; its int8 kernels are its own, so the
    logits agree within the gate's int8 rules, not to the bit."""
    chromium_binary()
    checked = run_cli(
        "verify-target", str(bundle), str(smoke.pipeline), "--browser", "--rows", "24", "--json"
    )
    assert checked.exit_code == 0, checked.stderr
    record = checked.json()
    assert record["token_ids_differ"] == 0 and record["metrics"]["agreement"] == 1.0
    assert "WebAssembly" in record["onnxruntime"] and "Chromium" in record["javascript"]


def test_a_build_can_require_the_javascript_check_before_it_ships(tiny_pipeline, tmp_path):
    """gate.targets: the staged bundle runs in Node before it is published; the check is a
    gate rule and is recorded like verify-target's."""
    pipeline = write_pipeline(
        tmp_path, {"gate": {"targets": ["node"]}}, base=tiny_pipeline, name="checked.yaml"
    )
    built = run_cli(
        "build",
        str(pipeline),
        "--output",
        str(tmp_path / "bundle"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
        "-q",
    )
    assert built.exit_code == 0, built.stderr
    manifest = Manifest.load(tmp_path / "bundle" / "manifest.json")
    rule = manifest.gate.rules["targets.node.failed_checks"]
    assert rule.passed and rule.measured == 0.0
    (check,) = manifest.targets
    assert check.javascript.startswith("transformers.js") and check.form == "int8"
    assert check.token_ids_differ == 0 and check.predictions_differ == 0
    assert check.rows == manifest.data.splits["test"].rows
    Predictor(tmp_path / "bundle").predict(["the manifest's digests still hold"])


def test_what_javascript_cannot_run_is_a_failed_check_named_in_one_line(tiny, tmp_path):
    """A model family transformers.js does not know (here: config.json's model_type
    changed, the manifest re-hashed; the Python runtime never reads it) fails the check,
    exit 1, the reason in one line, recorded in the manifest."""
    bundle = shutil.copytree(tiny.bundle, tmp_path / "bundle")
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "model_type": "not-a-family"}))
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / "config.json").read_bytes()
    manifest["files"]["config.json"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    checked = run_cli("verify-target", str(bundle), str(tiny.pipeline), "--node")
    assert checked.exit_code == 1
    assert "not-a-family" in checked.stderr and len(checked.stderr.strip().splitlines()) == 1
    (check,) = Manifest.load(bundle / "manifest.json").targets
    assert not check.passed and "not-a-family" in check.failures[0]


def test_the_browser_check_serves_nothing_outside_the_page_and_the_bundle(tmp_path):
    """The page's server (127.0.0.1, while a --browser check runs) answers only under its
    random prefix, and never with a file outside the bundle or the page's folder."""
    from edgefreeze.recipes.browser import JAVASCRIPT, CheckHandler

    bundle = tmp_path / "bundle"
    (bundle / "selfcheck").mkdir(parents=True)
    (bundle / "selfcheck" / "0.png").write_bytes(b"png")
    handler = object.__new__(CheckHandler)  # translate_path needs no request
    handler.prefix, handler.bundle, handler.inputs = "/p", bundle, tmp_path / "inputs.json"
    handler.directory, handler.images = str(JAVASCRIPT), [bundle / "selfcheck" / "0.png"]
    assert handler.translate_path("/p/images/0") == str(bundle / "selfcheck" / "0.png")
    assert handler.translate_path("/p/bundle/selfcheck/0.png") == str(bundle / "selfcheck/0.png")
    assert handler.translate_path("/p/bundle.mjs") == str(JAVASCRIPT / "bundle.mjs")
    for path in (
        "/p/bundle/../../etc/hostname",
        "/p/bundle//etc/hostname",
        "/p/bundle/%2e%2e/%2e%2e/%2e%2e/etc/hostname",
        "/p/../../etc/hostname",
        "/p/images/1",  # only the inputs' own images, by number
        "/p/images/../../etc/hostname",
        "/bundle.mjs",  # no prefix
    ):
        served = Path(handler.translate_path(path)).resolve()
        inside = served.is_relative_to(JAVASCRIPT) or served.is_relative_to(bundle)
        assert inside and not served.exists(), path
