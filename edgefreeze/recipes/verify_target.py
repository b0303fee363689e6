"""`edgefreeze verify-target`: run a bundle's model on its held-out split with another
interpreter, the device's own CPU under qemu-user (an aarch64 Python from Debian's arm64
packages) or an older ONNX Runtime a fleet still runs, and record what it measured in the
manifest. The bundle then says which runtimes and CPUs it was checked on, not only the
one it was built with.

The target side is `edgefreeze.runtime.probe`, torch-free; this side compares its outputs
with this machine's for the same model form, and with the targets, by the task's metrics
and the pipeline's gate rules (`max_metric_drop`, `min_agreement`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np

from edgefreeze.data import load_data
from edgefreeze.errors import CheckFailed, ConfigError, EdgefreezeError
from edgefreeze.gate import Rule, Verdict, tolerance_rules
from edgefreeze.publish.staging import check_unsigned, file_table, update_manifest
from edgefreeze.recipes.browser import BROWSERS, JAVASCRIPT, find_browser
from edgefreeze.runtime.bundle import MANIFEST, Bundle, Predictor
from edgefreeze.runtime.forms import FORMS, INT8
from edgefreeze.runtime.manifest import Manifest, TargetCheck
from edgefreeze.schema import Pipeline
from edgefreeze.tasks import task_for
from edgefreeze.tasks.encoding import Encoded, EncodedImages, ModelInputs

# The folder holding the edgefreeze package: on the probe's PYTHONPATH, so that a target
# Python without edgefreeze installed imports it from here (the runtime is pure Python).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
NODE_MACHINES = {"x64": "x86_64", "arm64": "aarch64"}  # Node's names as Python's
# ELF e_machine -> qemu-user's name for the architecture
ELF_MACHINES = {0xB7: "aarch64", 0x28: "arm", 0x3E: "x86_64", 0xF3: "riscv64"}


@dataclass(frozen=True)
class Probed:
    """What a probe wrote: each input's outputs, and where the target reports them, its
    token ids and its own reading of the outputs (a JSON prediction)."""

    outputs: list[np.ndarray]
    ids: list[list[int]] | None = None
    predictions: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Interpreter:
    """A Python to run the probe with: on this CPU, or under qemu-user with `sysroot` as
    its root file system (libraries and the standard library)."""

    python: Path
    sysroot: Path | None = None
    paths: tuple[Path, ...] = ()  # where its packages are (unpacked wheels), if not its own

    def command(self, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([*map(str, self.paths), str(PACKAGE_ROOT)]),
        }
        command = [str(self.python), "-m", "edgefreeze.runtime.probe", *arguments]
        if self.sysroot is None:
            return command, env
        arch = elf_machine(self.python)
        qemu = shutil.which(f"qemu-{arch}-static") or shutil.which(f"qemu-{arch}")
        if qemu is None:
            raise ConfigError(
                f"--sysroot: {self.python} is an {arch} program and no "
                f"qemu-{arch}-static is installed (Debian: qemu-user-static)"
            )
        env.update(QEMU_LD_PREFIX=str(self.sysroot), PYTHONHOME=str(self.sysroot / "usr"))
        return [qemu, *command], env

    def check(self, manifest: Manifest, form: str) -> None:
        """The Python runtime runs every bundle and form this edgefreeze makes."""

    def read(self, outputs: Path, count: int) -> Probed:
        """The probe's outputs (an .npz); it reports no token ids nor predictions."""
        with np.load(outputs) as arrays:
            return Probed([arrays[str(i)][0] for i in range(count)])

    def record(self, versions: dict[str, str]) -> dict[str, str | None]:
        """What the manifest's target check says of the runtime that ran."""
        return {
            "machine": versions["machine"],
            "emulated_by": _emulator(self),
            "python": versions["python"],
            "onnxruntime": versions["onnxruntime"],
            "numpy": versions["numpy"],
        }


class JavascriptTarget:
    """A JavaScript runtime running the bundle with transformers.js
    (`edgefreeze/javascript/bundle.mjs`) as an app would: its own tokenizer, its own ONNX
    Runtime build. Its token ids are compared with this machine's, and its predictions
    with the Python runtime's reading of the same outputs (labels; tags, entities and
    their offsets)."""

    option: str  # the command-line flag that asks for it

    def package_version(self, name: str) -> str:
        """An installed npm package's version, from its package.json."""
        try:
            return str(
                json.loads((JAVASCRIPT / "node_modules" / name / "package.json").read_text())[
                    "version"
                ]
            )
        except (OSError, ValueError, KeyError):
            return "unknown"

    def installed(self) -> None:
        if not (JAVASCRIPT / "node_modules" / "@huggingface" / "transformers").is_dir():
            raise ConfigError(
                f"{self.option}: transformers.js is not installed in {JAVASCRIPT}: run "
                "`make js` (npm ci there, from its lock file)"
            )

    inputs: tuple[str, ...]  # the input kinds bundle.mjs reads here as the runtime does

    def runs(self, inputs: str, where: str) -> None:
        """Exit 2 for a bundle whose input kind this runtime does not read yet."""
        if inputs not in self.inputs:
            raise ConfigError(
                f"{where}: {self.option} runs bundles whose inputs are "
                f"{', '.join(self.inputs)}; not {inputs!r}"
            )

    def check(self, manifest: Manifest, form: str) -> None:
        """A bundle whose inputs bundle.mjs reads here, in a one-graph form."""
        self.runs(manifest.task.inputs, str(manifest.pipeline.name))
        if form not in manifest.javascript and FORMS[form].split:
            raise ConfigError(
                f"{self.option}: {form} is two graphs, which transformers.js does not chain"
            )

    def read(self, outputs: Path, count: int) -> Probed:
        """The probe's outputs, token ids and predictions, one record per input (JSON)."""
        records = json.loads(outputs.read_text(encoding="utf-8"))[:count]
        return Probed(
            [np.asarray(r["logits"], dtype=np.float32) for r in records],
            [[int(i) for i in r["ids"]] for r in records],
            [r["prediction"] for r in records],
        )


@dataclass(frozen=True)
class NodeRuntime(JavascriptTarget):
    """Node.js with onnxruntime-node (`edgefreeze/javascript/probe.mjs`)."""

    node: str = "node"
    option = "--node"
    inputs = ("text", "words", "image")

    def command(self, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
        node = shutil.which(self.node)
        if node is None:
            raise ConfigError("--node: no `node` on PATH (Node.js 18 or later)")
        self.installed()
        return [node, str(JAVASCRIPT / "probe.mjs"), *arguments], dict(os.environ)

    def versions(self) -> dict[str, str]:
        """What the probe reports of itself, read without it (when it failed)."""
        done = subprocess.run([self.node, "--version"], capture_output=True, text=True)
        return {
            "machine": platform.machine(),
            "node": done.stdout.strip().removeprefix("v") or "unknown",
            "transformers_js": self.package_version("@huggingface/transformers"),
            "onnxruntime": self.package_version("onnxruntime-node"),
        }

    def record(self, versions: dict[str, str]) -> dict[str, str | None]:
        return {
            "machine": NODE_MACHINES.get(versions["machine"], versions["machine"]),
            "onnxruntime": f"{versions['onnxruntime']} (onnxruntime-node)",
            "javascript": f"transformers.js {versions['transformers_js']}, Node {versions['node']}",
        }


@dataclass(frozen=True)
class BrowserRuntime(JavascriptTarget):
    """Headless Chromium with ONNX Runtime Web's WebAssembly backend on one thread
    (`edgefreeze.recipes.browser` serves the page and collects what it posts)."""

    option = "--browser"
    inputs = ("text", "words", "image")

    def command(self, arguments: list[str]) -> tuple[list[str], dict[str, str]]:
        if find_browser() is None:
            raise ConfigError(f"--browser: no Chromium on PATH ({', '.join(BROWSERS)})")
        self.installed()
        return [sys.executable, "-m", "edgefreeze.recipes.browser", *arguments], dict(os.environ)

    def versions(self) -> dict[str, str]:
        """What the page reports of itself, read without it (when it failed)."""
        browser = find_browser() or "chromium"
        done = subprocess.run([browser, "--version"], capture_output=True, text=True)
        return {
            "machine": platform.machine(),
            "browser": done.stdout.strip() or "unknown",
            "transformers_js": self.package_version("@huggingface/transformers"),
            "onnxruntime": self.package_version("onnxruntime-web"),
        }

    def record(self, versions: dict[str, str]) -> dict[str, str | None]:
        return {
            "machine": versions["machine"],
            "onnxruntime": f"{versions['onnxruntime']} (onnxruntime-web, WebAssembly)",
            "javascript": f"transformers.js {versions['transformers_js']}, {versions['browser']}",
        }


Target = Interpreter | NodeRuntime | BrowserRuntime
JAVASCRIPT_TARGETS: dict[str, type[NodeRuntime | BrowserRuntime]] = {
    "node": NodeRuntime,
    "browser": BrowserRuntime,
}


def elf_machine(path: Path) -> str:
    """The architecture an ELF executable is built for."""
    try:
        header = path.read_bytes()[:20]
    except OSError as exc:
        raise ConfigError(f"--python: cannot read {path}: {exc.strerror}") from None
    if header[:4] != b"\x7fELF":
        raise ConfigError(f"--python: {path} is not an ELF executable")
    code = int.from_bytes(header[18:20], "little")
    if code not in ELF_MACHINES:
        raise ConfigError(
            f"--python: {path} is for ELF machine {code:#x}, which this command does not know"
        )
    return ELF_MACHINES[code]


def verify_target(
    bundle: Path,
    pipeline: Pipeline,
    target: Target,
    form: str = "int8",
    rows: int | None = None,
) -> TargetCheck:
    """Run `form` of the bundle on the pipeline's held-out split (its first `rows`) on
    `target`; record the check in the bundle's manifest. Raises `CheckFailed` (exit 1)
    when the target's results break the gate's rules for the form against this machine's
    (or, in JavaScript, its token ids or its reading of the outputs differ)."""
    check_unsigned(bundle)  # before minutes of running, not after
    _check_writable(bundle)
    check = measure_target(bundle, pipeline, target, form, rows)
    update_manifest(bundle, partial(_with_check, check=check))
    if check.failures:
        raise CheckFailed(
            f"{bundle}: on {check.machine} with onnxruntime "
            f"{check.onnxruntime}: {'; '.join(check.failures)}"
        )
    return check


def check_gate_targets(pipeline: Pipeline, inputs: str) -> None:
    """Before a build trains: each of `gate.targets` is installed and can run a bundle
    with these inputs (else exit 2 now, not after training)."""
    for name in pipeline.spec.gate.targets:
        target = JAVASCRIPT_TARGETS[name]()
        target.command([])  # node or Chromium on PATH, transformers.js installed
        target.runs(inputs, f"{pipeline.path}: gate.targets")


def gate_on_targets(
    folder: Path, pipeline: Pipeline, manifest: Manifest, verdict: Verdict
) -> Manifest:
    """A build's staged bundle run on each of `gate.targets` (JavaScript runtimes) before it
    ships: each check is recorded in the manifest's `targets`, and one that fails is a
    failed gate rule, so the build refuses to ship."""
    files = file_table(folder)  # the manifest the check reads; publish writes the final one
    (folder / MANIFEST).write_text(manifest.model_copy(update={"files": files}).to_json())
    checks, rules = [], []
    for name in pipeline.spec.gate.targets:
        check = measure_target(folder, pipeline, JAVASCRIPT_TARGETS[name](), INT8.name, None)
        checks.append(check)
        first = f" ({check.failures[0]})" if check.failures else ""
        rules.append(
            Rule(
                f"targets.{name}.failed_checks",
                float(len(check.failures)),
                0.0,
                "max",
                f"int8 checks failed in {check.javascript}{first}",
            )
        )
    return manifest.model_copy(
        update={
            "targets": [*manifest.targets, *checks],
            "gate": Verdict(verdict.rules + rules).record(),
        }
    )


def measure_target(
    bundle: Path, pipeline: Pipeline, target: Target, form: str, rows: int | None
) -> TargetCheck:
    """What `target` computes with `form` of the bundle on the pipeline's held-out split,
    against this machine, by the gate's rules (written nowhere)."""
    host = Predictor(bundle, form)  # verifies the bundle first
    manifest = host.bundle.manifest
    target.check(manifest, form)
    task = task_for(manifest.task.name)
    data = load_data(pipeline.spec.data, task, pipeline.resolve)
    if data.test.fingerprint() != manifest.data.splits["test"].fingerprint:
        raise ConfigError(
            f"{pipeline.path}: its held-out split is not the one {bundle} was "
            "gated on (fingerprints differ); give the pipeline it was built with"
        )
    examples = list(data.test.inputs[:rows])
    feeds = [host.encoder.encode(example) for example in examples]
    targets = task.aligned_targets(data.test.targets[: len(examples)], _encoded(feeds))
    try:
        versions, probed = _run_probe(bundle, form, examples, target)
    except ProbeFailed as failed:
        if isinstance(target, Interpreter):
            raise
        # A bundle JavaScript cannot run (an operator ONNX Runtime Web lacks, a tokenizer
        # it cannot read) is a failed check, named in one line: not an error of this tool.
        return _failed_check(target, form, len(examples), str(failed))
    here = [host.model.run(feed)[0] for feed in feeds]
    there = probed.outputs
    measured, own = task.metrics(there, targets, here), task.metrics(here, targets, here)
    rules = tolerance_rules(
        FORMS[form], measured, own, task.gate_metric, pipeline.spec.gate, against="this machine"
    )
    differ = _differences(probed, feeds, examples, host.bundle)
    failures = [
        f"{what} differ on {len(rows)} of {len(feeds)} inputs (first: held-out row {rows[0]})"
        for what, rows in differ.items()
        if rows
    ] + [rule.describe() for rule in rules if not rule.passed]
    return TargetCheck(
        **target.record(versions),
        form=form,
        rows=len(examples),
        metrics=measured,
        host_metrics=own,
        token_ids_differ=_count(differ.get(TOKEN_IDS)),
        predictions_differ=_count(differ.get(PREDICTIONS)),
        passed=not failures,
        failures=failures,
        checked=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


class ProbeFailed(EdgefreezeError):
    """The target's probe exited with an error (its last line says which)."""


def _failed_check(
    target: NodeRuntime | BrowserRuntime, form: str, rows: int, why: str
) -> TargetCheck:
    return TargetCheck(
        **target.record(target.versions()),
        form=form,
        rows=rows,
        metrics={},
        host_metrics={},
        passed=False,
        failures=[why],
        checked=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


TOKEN_IDS = "token ids (against this machine's tokenizer)"
PREDICTIONS = "predictions (against the Python runtime's reading of the same outputs)"


def _differences(
    probed: Probed, feeds: list[dict[str, np.ndarray]], examples: list[Any], bundle: Bundle
) -> dict[str, list[int]]:
    """The rows where the target's token ids, or its reading of its own outputs (labels;
    tags, entities and their offsets), differ from this machine's, for what it reports."""
    differ: dict[str, list[int]] = {}
    if probed.ids is not None and feeds and "input_ids" in feeds[0]:  # images have none
        differ[TOKEN_IDS] = [
            row
            for row, (ids, feed) in enumerate(zip(probed.ids, feeds))
            if ids != feed["input_ids"][0].tolist()
        ]
    if probed.predictions is not None:
        decoder = bundle.decoder()
        differ[PREDICTIONS] = [
            row
            for row, (theirs, outputs, feed, example) in enumerate(
                zip(probed.predictions, probed.outputs, feeds, examples)
            )
            if _comparable(theirs, example, utf16=True)
            != _comparable(
                # the decoders return dataclasses (Prediction, Tagging)
                asdict(cast(Any, decoder.decode(outputs, bundle.labels, feed, example))),
                example,
            )
        ]
    return differ


def _comparable(prediction: dict[str, Any], example: Any, utf16: bool = False) -> object:
    """What must match of a prediction: the label; the tags, and each entity's type, text
    and offsets in code points (JavaScript counts UTF-16 units). Scores may differ in
    their last digits."""

    def point(offset: int) -> int:
        if not utf16:
            return offset
        text = example if isinstance(example, str) else " ".join(map(str, example))
        units = text.encode("utf-16-le", errors="surrogatepass")[: 2 * offset]
        return len(units.decode("utf-16-le", errors="surrogatepass"))

    return (
        prediction.get("label"),
        prediction.get("tags"),
        prediction.get("words_unread"),
        [
            (e["type"], e["text"], point(e["start"]), point(e["end"]))
            for e in prediction.get("entities", [])
        ],
    )


def _count(rows: list[int] | None) -> int | None:
    return None if rows is None else len(rows)


def _run_probe(
    bundle: Path, form: str, examples: list[Any], target: Target, timeout_s: float = 3600
) -> tuple[dict[str, str], Probed]:
    """The target's versions and what it computed on `examples`: the probe, run by
    `target`, reads them from a file and writes another."""
    with tempfile.TemporaryDirectory(prefix="edgefreeze-target-") as scratch:
        # The Python probe writes .npz (numpy's savez keeps a name that ends so); the
        # JavaScript probes write JSON to the same name.
        inputs, outputs = Path(scratch) / "inputs.json", Path(scratch) / "outputs.npz"
        inputs.write_text(
            json.dumps(
                [
                    os.fspath(example) if isinstance(example, os.PathLike) else example
                    for example in examples
                ]
            ),
            encoding="utf-8",
        )
        command, env = target.command([str(bundle), form, str(inputs), str(outputs)])
        probe = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            stdout, stderr = probe.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            probe.terminate()  # SIGTERM: the browser probe takes its Chromium down with it
            probe.communicate()
            raise ProbeFailed(f"the target ran past {timeout_s:.0f} s") from None
        last = (stderr.strip().splitlines() or ["(no message)"])[-1]
        if probe.returncode != 0 or not stdout.strip():
            raise ProbeFailed(f"the target failed to run it (exit {probe.returncode}): {last}")
        versions = json.loads(stdout.strip().splitlines()[-1])
        return versions, target.read(outputs, len(examples))


def _encoded(feeds: list[dict[str, np.ndarray]]) -> ModelInputs:
    """The device encoder's feeds as the task aligns targets with them (a tagger's labels
    go on the tokens where its words start)."""
    if feeds and "input_ids" not in feeds[0]:  # images: nothing to align
        return EncodedImages({name: [feed[name][0] for feed in feeds] for name in feeds[0]})
    return Encoded(
        {"input_ids": [feed["input_ids"][0] for feed in feeds]},
        pad_token_id=0,
        word_starts=[feed["word_starts"][0] for feed in feeds]
        if feeds and "word_starts" in feeds[0]
        else None,
    )


def _emulator(interpreter: Interpreter) -> str | None:
    if interpreter.sysroot is None:
        return None
    qemu = interpreter.command([])[0][0]
    done = subprocess.run([qemu, "--version"], capture_output=True, text=True)
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 else Path(qemu).name


def _check_writable(bundle: Path) -> None:
    """The check is written back to the manifest, under a lock beside the bundle: refuse
    before a probe that may run for an hour under emulation, not after it."""
    folder = bundle.resolve().parent
    if not (os.access(folder, os.W_OK) and os.access(bundle / MANIFEST, os.W_OK)):
        raise ConfigError(
            f"verify-target: cannot write {bundle / MANIFEST} and its lock in {folder}; "
            "run it where the bundle can be written, or on a copy"
        )


def _with_check(manifest: Manifest, check: TargetCheck) -> Manifest:
    """The manifest with `check` added, replacing an earlier one of the same machine, form
    and ONNX Runtime."""
    kept = [
        c
        for c in manifest.targets
        if (c.machine, c.form, c.onnxruntime) != (check.machine, check.form, check.onnxruntime)
    ]
    return manifest.model_copy(update={"targets": [*kept, check]})
