"""The command line: thin; each command calls one function and maps failures to exit codes.

Exit codes: 0 shipped, 1 the gate refused, 2 bad input or configuration, 3 anything else.
With --json, stdout carries exactly one JSON object whatever happens.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import click

from edgefreeze import __version__
from edgefreeze.errors import ConfigError, EdgefreezeError
from edgefreeze.interrupts import Terminated, stopping_on_signals
from edgefreeze.runtime.forms import FORMS, FP32, INT8, REFERENCE
from edgefreeze.runtime.manifest import GateRefused, Manifest

# The extra that brings each optional module: a command that needs one names the install.
EXTRA_OF = {
    **dict.fromkeys(
        (
            "torch",
            "transformers",
            "optimum",
            "onnx",
            "yaml",
            "tqdm",
            "safetensors",
            "optuna",
            "peft",
        ),
        "build",
    ),
    **dict.fromkeys(("tuf", "securesystemslib", "cryptography", "urllib3"), "signing"),
}


def _summary(manifest: Manifest) -> dict[str, Any]:
    """What --json says of a build (a `Manifest`)."""
    record = manifest.model_dump(mode="json")
    return {
        **{key: record[key] for key in ("metrics", "gate", "cache", "sizes", "timings_s")},
        "trainable_parameters": manifest.training.freeze.trainable_parameters,
    }


def _run(as_json: bool, action: Callable[[], dict[str, Any] | None]) -> None:
    """Run a command body; turn every outcome into one exit code and, with --json, one
    JSON object on stdout (none on success when the body printed its own JSON lines).
    Tracebacks only when EDGEFREEZE_TRACEBACK=1. SIGTERM unwinds like Ctrl-C, so that
    staging folders and locks are cleaned up on the way out."""
    try:
        with stopping_on_signals():
            payload, code = action(), 0
    except GateRefused as exc:
        payload = {"status": "refused", "report": str(exc.report_dir), **_summary(exc.manifest)}
        code = exc.exit_code
        click.echo(f"edgefreeze: {exc}", err=True)
    except EdgefreezeError as exc:
        payload = {"status": "error", "message": str(exc), **exc.details}
        code = exc.exit_code
        click.echo(f"edgefreeze: error: {exc}", err=True)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        payload, code = {"status": "error", "message": str(exc)}, 2
        click.echo(
            f"edgefreeze: error: this command needs the {extra} extra (missing "
            f"{exc.name}): pip install 'edgefreeze[{extra}]'",
            err=True,
        )
    except KeyboardInterrupt:
        payload, code = {"status": "interrupted"}, 130
        click.echo("edgefreeze: interrupted", err=True)
    except Terminated:
        payload, code = {"status": "terminated"}, 143
        click.echo("edgefreeze: terminated", err=True)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one readable line
        if os.environ.get("EDGEFREEZE_TRACEBACK") == "1":
            traceback.print_exc()
        payload, code = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}, 3
        click.echo(
            f"edgefreeze: unexpected error: {type(exc).__name__}: {exc} "
            "(set EDGEFREEZE_TRACEBACK=1 for the traceback)",
            err=True,
        )
    if as_json and payload is not None:
        click.echo(json.dumps({"exit_code": code, **payload}, indent=2))
    sys.exit(code)


class _Commands(click.Group):
    """Click's group, with usage errors kept to the contract: one line on stderr, exit 2,
    and with --json one JSON object on stdout (Click prints a usage block and no JSON)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())
            code = 0
        except click.ClickException as exc:
            context = getattr(exc, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context else ""
            message = exc.format_message().replace("\n", " ")
            click.echo(f"edgefreeze: error: {message}{hint}", err=True)
            if "--json" in argv:
                click.echo(
                    json.dumps({"exit_code": 2, "status": "error", "message": message}, indent=2)
                )
            code = 2
        except click.Abort:
            click.echo("edgefreeze: interrupted", err=True)
            code = 130
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefreeze")
def main() -> None:
    """Fine-tune the top of a pretrained transformer, export it to ONNX, quantize it to
    int8, and ship it only if it passes the gate."""


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON result.")
trust_option = click.option(
    "--trust",
    "trusted_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A public key one of which must have signed the bundle (edgefreeze sign); "
    "repeatable. An unsigned, re-signed or altered bundle is refused.",
)


def build_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `build` and `retrain` share."""
    options = [
        click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False)),
        click.option(
            "--output",
            type=click.Path(file_okay=False, path_type=Path),
            help="Bundle folder (default: the pipeline's output, else models/NAME/vN).",
        ),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            help="Training device; overrides the pipeline's train.device.",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Activation cache folder (else $EDGEFREEZE_CACHE_DIR, the pipeline's "
            "cache.dir, ~/.cache/edgefreeze).",
        ),
        click.option("--no-cache", is_flag=True, help="Run the frozen stem live every epoch."),
        click.option(
            "--baseline",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="The release in the field: refuse (exit 1) a model that loses more "
            "than gate.baseline.max_metric_drop against its int8 model or "
            "flips more than gate.baseline.max_flip_share of its predictions.",
        ),
        click.option(
            "--sign-key",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Sign the bundle with this PEM private key before it is published "
            "(as edgefreeze sign does).",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON result on stdout."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass(frozen=True)
class BuildCommand:
    """What `build`, `retrain` and `sweep` take from the command line."""

    pipeline_file: str
    output: Path | None
    device: str | None
    cache_dir: Path | None
    no_cache: bool
    quiet: bool
    as_json: bool
    baseline: Path | None = None
    sign_key: Path | None = None
    added: tuple[Path, ...] = ()
    warm_start: Path | None = None
    epochs: int | None = None


def _build(command: BuildCommand, sweep: dict[str, Any] | None = None) -> None:
    """`build`, `retrain` and (with `sweep`: its --trials and --timeout) `sweep`."""

    def action() -> dict[str, Any]:
        from edgefreeze.schema import load_pipeline

        pipeline = load_pipeline(command.pipeline_file)  # refused before torch loads
        signature = _signature_of(command.sign_key)  # a bad key too, before any training

        from edgefreeze.progress import Reporter
        from edgefreeze.recipes.build import BuildOptions
        from edgefreeze.recipes.build import build as run_build

        options = BuildOptions(
            output=command.output,
            device=command.device,
            cache_dir=command.cache_dir,
            use_cache=False if command.no_cache else None,
            added_rows=list(command.added),
            warm_start=command.warm_start,
            epochs=command.epochs,
            baseline=command.baseline,
            sign_key=command.sign_key,
        )
        reporter = Reporter(command.quiet)
        if sweep is None:
            result = run_build(pipeline, options, reporter)
        else:
            from edgefreeze.recipes.sweep import sweep as run_sweep

            result = run_sweep(pipeline, options, reporter, **sweep)
        if result is None:  # a torchrun process other than 0: it trained, 0 ships
            return {"status": "trained"}
        if not command.quiet:
            _say_shipped(result.path, result.manifest)
        manifest = result.manifest
        chosen = (
            {"sweep": manifest.sweep.model_dump(mode="json", exclude={"trials"})}
            if manifest.sweep
            else {}
        )
        return {
            "status": "shipped",
            "bundle": str(result.path),
            **_summary(manifest),
            **chosen,
            **signature,
        }

    _run(command.as_json, action)


def _signature_of(key: Path | None) -> dict[str, Any]:
    """What --json says of the signature a build will make (checking the key now)."""
    if key is None:
        return {}
    from edgefreeze.runtime.signature import SIGNATURE, SignatureRecord, key_fingerprint

    return {"signature": SignatureRecord(SIGNATURE, key_fingerprint(key, private=True)).as_json()}


def _say_shipped(path: Path, manifest: Manifest) -> None:
    """The lines a person reads when a build ships: the sweep's choice, the int8 figures."""
    metric = manifest.task.gate_metric
    int8 = manifest.metrics[INT8.name]
    if manifest.sweep is not None:
        searched = manifest.sweep
        number = searched.best_trial if searched.chosen_trial is None else searched.chosen_trial
        click.echo(
            f"chose trial {number} of {len(searched.trials)}: {searched.trials[number].params}",
            err=True,
        )
    click.echo(
        f"shipped {path} ({INT8.name} {metric} {int8[metric]:.4f}, "
        f"agreement {int8['agreement']:.4f})",
        err=True,
    )


@main.command(short_help="Train, export, quantize, gate and publish a bundle.")
@build_options
def build(**options: Any) -> None:
    """Train, export, quantize, gate and publish the bundle a PIPELINE file describes."""
    _build(BuildCommand(**options))


@main.command(short_help="Retrain on the pipeline's data plus new rows.")
@build_options
@click.option(
    "--add",
    "added",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="A CSV or JSONL file of new labelled rows (same columns), or an image folder; repeatable.",
)
@click.option(
    "--from",
    "warm_start",
    type=click.Path(file_okay=False, path_type=Path),
    help="Start from this bundle's trained top instead of the pretrained one.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), help="Epochs of this retrain (default: the pipeline's)."
)
def retrain(**options: Any) -> None:
    """Retrain the top on the PIPELINE's data plus new rows, then export, quantize, gate
    and publish like `build`. With the cache, only the new rows pass the frozen stem."""
    _build(BuildCommand(**options))


@main.command(short_help="Search the trainable part's settings from one cache; ship the best.")
@build_options
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    help="Trials to run (default: the pipeline's sweep.trials).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Start no trial after this many seconds (default: sweep.timeout_s).",
)
def sweep(trials: int | None, timeout_s: float | None, **options: Any) -> None:
    """Train many settings of the PIPELINE's trainable part (learning rates, epochs,
    trainable layers, PEFT rank: its `sweep:` section) from one activation cache, choose
    the best by validation score, then export, quantize, gate and publish it like `build`."""
    _build(BuildCommand(**options), sweep={"trials": trials, "timeout_s": timeout_s})


@main.command("verify-target", short_help="Run a bundle on another CPU or ONNX Runtime; record it.")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option(
    "--python",
    "python",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The target's Python (with onnxruntime, tokenizers, numpy, pydantic).",
)
@click.option(
    "--node",
    is_flag=True,
    help="Run it in Node.js with transformers.js and onnxruntime-node instead (`make js` "
    "installs them); its token ids and its reading of the outputs are compared too.",
)
@click.option(
    "--browser",
    is_flag=True,
    help="Run it in headless Chromium with transformers.js and ONNX Runtime Web's "
    "WebAssembly backend instead; its token ids and its reading are compared too.",
)
@click.option(
    "--sysroot",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run --python under qemu-user with this root file system (another CPU).",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of the target's packages (unpacked wheels); repeatable.",
)
@click.option(
    "--model",
    "form",
    type=click.Choice(list(FORMS)),
    default=INT8.name,
    show_default=True,
    help="The model form to run.",
)
@click.option("--rows", type=click.IntRange(min=1), help="Only the first N held-out rows.")
@json_option
def verify_target(
    bundle: Path,
    pipeline_file: str,
    form: str,
    rows: int | None,
    as_json: bool,
    **interpreter: Any,
) -> None:
    """Run the BUNDLE's model on the held-out split of the PIPELINE it was built from with
    another runtime (an arm64 Python under qemu-user, an older ONNX Runtime; with --node
    or --browser, transformers.js in Node or headless Chromium), compare with this machine
    by the gate's rules, and record the check in the manifest. Exit 1 when the target
    breaks the rules or cannot run the bundle."""

    def action() -> dict[str, Any]:
        from edgefreeze.recipes.verify_target import JAVASCRIPT_TARGETS, Interpreter
        from edgefreeze.recipes.verify_target import verify_target as run_check
        from edgefreeze.schema import load_pipeline

        chosen = [name for name in ("node", "browser") if interpreter.pop(name)]
        if len(chosen) + (interpreter["python"] is not None) != 1:
            raise ConfigError("verify-target: give --python, --node or --browser (one of them)")
        javascript = chosen[0] if chosen else None
        if interpreter["python"] is None and (interpreter["sysroot"] or interpreter["paths"]):
            raise ConfigError("verify-target: --sysroot and --path go with --python")
        target = JAVASCRIPT_TARGETS[javascript]() if javascript else Interpreter(**interpreter)
        check = run_check(bundle, load_pipeline(pipeline_file), target, form, rows)
        if not as_json:
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in check.metrics.items())
            click.echo(
                f"{check.machine} ({check.javascript or check.emulated_by or 'native'}), "
                f"onnxruntime {check.onnxruntime}, {check.rows} rows: {metrics}",
                err=True,
            )
        return {"status": "passed", **check.model_dump(mode="json")}

    _run(as_json, action)


@main.command(short_help="Write a commented pipeline file for a data file or image folder.")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The pipeline file to write (default: NAME.yaml here); never overwritten.",
)
@click.option("--model", help="Model to fine-tune (default: the built-in MiniLM for text).")
@click.option("--name", help="The pipeline's name (default: from the data's file name).")
@click.option("--text-column", help="The input column, where detection picks another.")
@click.option("--label-column", help="The target column, where detection picks another.")
@click.option("--encoding", default="utf-8", show_default=True, help="The data's encoding.")
@json_option
def init(data: Path, as_json: bool, **choices: Any) -> None:
    """Read DATA (a CSV, JSON lines or CoNLL file, or a folder with a subfolder of images
    per class), detect the task, the columns, the labels and a likely group column, and
    write a pipeline file with the schema's defaults and a comment on each choice. Then
    `edgefreeze build` it. Data it cannot read: exit 2, one line."""

    def action() -> dict[str, Any]:
        from edgefreeze.recipes.init import InitRequest, init_pipeline

        written = init_pipeline(InitRequest(data=data, **choices))
        found = written.detected
        group = f", groups {found.group.name!r}" if found.group else ""
        click.echo(
            f"{data}: {found.rows:,} rows ({found.kind}): {found.task}, input "
            f"{found.inputs.name!r}, target {found.targets.name!r} "
            f"({len(found.label_counts)} labels){group}",
            err=True,
        )
        click.echo(
            f"wrote {written.pipeline}; build it with: edgefreeze build {written.pipeline}",
            err=True,
        )
        return written.summary()

    _run(as_json, action)


@main.command(short_help="Sign a bundle as a whole with a private key.")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM elliptic-curve private key (openssl ecparam -name prime256v1 -genkey).",
)
@json_option
def sign(bundle: Path, key: Path, as_json: bool) -> None:
    """Sign every file of a shipped BUNDLE (OpenSSF model-signing, offline) into
    BUNDLE/model.sig, replacing an earlier signature. Devices given the public key
    (predict --trust, Predictor(trusted_keys=...)) refuse the bundle if any file changes,
    is added or removed afterwards. Check targets (verify-target) before signing."""

    def action() -> dict[str, Any]:
        from edgefreeze.publish.claim import bundle_lock
        from edgefreeze.runtime.bundle import Bundle
        from edgefreeze.runtime.signature import sign_bundle

        with bundle_lock(bundle):  # no target check rewrites the manifest meanwhile
            accepted = Bundle(bundle)  # only a complete, accepted, unaltered bundle
            for name in accepted.manifest.files:
                accepted.verified(name)
            record = sign_bundle(bundle, key)
        click.echo(f"signed {bundle}: key sha256 {record.key_sha256}", err=True)
        return {"status": "signed", "bundle": str(bundle), "signature": record.as_json()}

    _run(as_json, action)


@main.command("slim", short_help="A device bundle: only the model forms a device runs.")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model",
    "forms",
    multiple=True,
    required=True,
    type=click.Choice(list(FORMS)),
    help="A model form the device runs; repeatable.",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The device bundle's folder (must not exist).",
)
@click.option(
    "--sign-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign the device bundle with this PEM private key (its manifest is new, so a "
    "signature of BUNDLE does not cover it).",
)
@trust_option
@json_option
def slim(
    bundle: Path,
    forms: tuple[str, ...],
    output: Path,
    sign_key: Path | None,
    trusted_keys: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Copy BUNDLE to --output with only what a device running the --model forms needs:
    their model files, the tokenizer or image settings, labels, config, self-check and
    reports; not the other forms nor the trained parameters `retrain --from` reads. After
    a head-only retrain of a split bundle, a split-int8 device bundle changes only in its
    top and small files: what `device update` then downloads."""

    def action() -> dict[str, Any]:
        from edgefreeze.fleet.slim import slim_bundle

        manifest = slim_bundle(bundle, output, forms, sign_key, trusted_keys)
        size = sum(record.size for record in manifest.files.values())
        click.echo(f"wrote {output}: {', '.join(forms)}, {size:,} bytes", err=True)
        return {
            "status": "written",
            "bundle": str(output),
            "forms": list(forms),
            "bytes": size,
            "dropped": manifest.slim.dropped if manifest.slim else [],
        }

    _run(as_json, action)


@main.command("verify", short_help="Check a bundle on this device before serving it.")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@trust_option
@click.option(
    "--model",
    "forms",
    multiple=True,
    type=click.Choice(list(FORMS)),
    help="A model form to self-check (default: every form the self-check covers).",
)
@json_option
def verify_command(
    bundle: Path, trusted_keys: tuple[Path, ...], forms: tuple[str, ...], as_json: bool
) -> None:
    """What a device runs before it serves BUNDLE: the signature (with --trust), every
    file's digest against the manifest, and the bundle's self-check: held-out inputs whose
    outputs at the gate must come out again from this machine's ONNX Runtime (the same
    labels, logits within the recorded tolerance). Exit 1 when the self-check fails."""

    def action() -> dict[str, Any]:
        from edgefreeze.errors import CheckFailed
        from edgefreeze.runtime.bundle import Bundle
        from edgefreeze.runtime.selfcheck import check_here

        result = check_here(Bundle(bundle, trusted_keys), forms)
        for form in result.forms:
            click.echo(form.describe(), err=True)
        if not result.forms:
            click.echo(f"{bundle}: carries no self-check; its files match", err=True)
        if not result.passed:
            raise CheckFailed(
                f"self-check failed on this machine: {result.failures}", result.as_json()
            )
        return {"status": "passed", "bundle": str(bundle), **result.as_json()}

    _run(as_json, action)


@main.group()
def device() -> None:
    """Install bundles on a device into A/B slots, switch atomically, roll back."""


def device_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--root and --json, which every device command takes."""
    command = json_option(command)
    return click.option(
        "--root",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The device's folder: slots/a, slots/b, and the current and previous links.",
    )(command)


@device.command("install")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@device_options
@trust_option
def device_install(source: Path, root: Path, trusted_keys: tuple[Path, ...], as_json: bool) -> None:
    """Check SOURCE (a bundle, or a delta update: a bundle folder without the files the
    serving version has) in the inactive slot, as `edgefreeze verify` does, then switch
    ROOT/current to it atomically; the version it replaces stays for `rollback`. A failed
    check leaves the serving version serving (exit 1, or 2 for a bad bundle)."""

    def action() -> dict[str, Any]:
        from edgefreeze.runtime.device import install, status

        check = install(root, source, trusted_keys)
        now = status(root)
        click.echo(
            f"{root}: serving slot {now.current} ({now.versions[str(now.current)]})", err=True
        )
        return {"status": "installed", **now.as_json(), **check.as_json()}

    _run(as_json, action)


@device.command("rollback")
@device_options
def device_rollback(root: Path, as_json: bool) -> None:
    """Serve the previous version again (atomically); the one it replaces becomes the
    previous."""

    def action() -> dict[str, Any]:
        from edgefreeze.runtime.device import rollback

        now = rollback(root)
        click.echo(f"{root}: serving slot {now.current} again", err=True)
        return {"status": "ok", **now.as_json()}

    _run(as_json, action)


@device.command("status")
@device_options
def device_status(root: Path, as_json: bool) -> None:
    """Which slot serves, which a rollback returns to, the version in each; removes what
    an interrupted install left."""

    def action() -> dict[str, Any]:
        from edgefreeze.runtime.device import status

        now = status(root)
        if not as_json:
            for slot, version in now.versions.items():
                role = {now.current: "current", now.previous: "previous"}.get(slot, "")
                click.echo(f"{slot}\t{role}\t{version}")
        return {"status": "ok", **now.as_json()}

    _run(as_json, action)


@device.command("update")
@device_options
@click.option(
    "--repo",
    "repository",
    required=True,
    metavar="URL",
    help="The TUF repository's base URL (it serves metadata/ and targets/; `edgefreeze repo`).",
)
@click.option(
    "--name",
    help="The model to fetch (a pipeline name); default: the serving bundle's.",
)
@click.option(
    "--bootstrap",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The repository's root.json, trusted on the first update; later updates trust "
    "the root TUF keeps under ROOT/tuf (rotated by the repository's own rules).",
)
@trust_option
def device_update(
    root: Path,
    as_json: bool,
    repository: str,
    name: str | None,
    bootstrap: Path | None,
    trusted_keys: tuple[Path, ...],
) -> None:
    """Fetch the newest release from a TUF repository and install it as `device install`
    does. Metadata is checked by TUF's rules (signatures, versions that never go back,
    expiry); only the files the serving version lacks are downloaded (a head-only retrain
    fetches its top, not the stem). A release whose self-check failed here, or that was
    rolled back from, is not fetched again. Exit 1: the new release failed its check here
    (the serving version serves on); 2: the repository's metadata or files are refused;
    3: the repository cannot be reached."""

    def action() -> dict[str, Any]:
        from edgefreeze.fleet.update import update
        from edgefreeze.runtime.device import status

        result = update(root, repository, name, bootstrap, trusted_keys)
        now = status(root)
        if result.release is None:
            click.echo(f"{root}: up to date: {result.note}", err=True)
            return {"status": "up-to-date", **result.as_json(), **now.as_json()}
        click.echo(
            f"{root}: serving {result.name} {result.release} in slot {now.current}; fetched "
            f"{len(result.fetched)} files, {result.fetched_bytes:,} of {result.release_bytes:,} "
            "bytes",
            err=True,
        )
        return {"status": "installed", **result.as_json(), **now.as_json()}

    _run(as_json, action)


@main.group()
def repo() -> None:
    """Publish bundles to a TUF repository that devices update from (`device update`)."""


def repo_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """REPO and --keys, which every repository command takes (with --json)."""
    command = json_option(command)
    command = click.option(
        "--keys",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The folder of the roles' private keys (root.pem, targets.pem, snapshot.pem, "
        "timestamp.pem). Keep it off the server; root's key belongs offline.",
    )(command)
    return click.argument(
        "folder", metavar="REPO", type=click.Path(file_okay=False, path_type=Path)
    )(command)


@repo.command("init")
@repo_options
def repo_init(folder: Path, keys: Path, as_json: bool) -> None:
    """Make REPO a TUF repository (consistent snapshots) whose roles sign with the keys in
    --keys, creating the keys that are missing. Serve REPO as static files; give devices
    REPO/metadata/root.json (`device update --bootstrap`)."""

    def action() -> dict[str, Any]:
        from edgefreeze.fleet.repository import init_repository

        created = init_repository(folder, keys)
        for key in created:
            click.echo(f"created {key}", err=True)
        click.echo(f"{folder}: a repository; devices trust {folder}/metadata/root.json", err=True)
        return {
            "status": "ok",
            "repository": str(folder),
            "keys_created": [str(k) for k in created],
        }

    _run(as_json, action)


@repo.command("add")
@repo_options
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@trust_option
def repo_add(
    folder: Path, keys: Path, bundle: Path, trusted_keys: tuple[Path, ...], as_json: bool
) -> None:
    """Publish BUNDLE as its model's next release: every file checked against the
    manifest (and the signature, with --trust), stored under its digest, and signed into
    the targets, snapshot and timestamp metadata. A device serving the previous release
    fetches only the files that changed."""

    def action() -> dict[str, Any]:
        from edgefreeze.fleet.repository import add_release

        published = add_release(folder, bundle, keys, trusted_keys)
        record = published.as_json()
        new = record["bytes_new_since_previous"]
        since = "" if new is None else f"; {new:,} bytes new since the previous release"
        click.echo(
            f"{folder}: released {published.name} {published.release.version} "
            f"({record['files']} files, {record['bytes']:,} bytes{since})",
            err=True,
        )
        return {"status": "released", **record}

    _run(as_json, action)


@repo.command("refresh")
@repo_options
def repo_refresh(folder: Path, keys: Path, as_json: bool) -> None:
    """Re-sign the snapshot and timestamp metadata with fresh expiry dates (they need only
    snapshot.pem and timestamp.pem), and root and targets where they expire within 60 days
    and root.pem or targets.pem is in --keys. Run it from a timer well within the
    timestamp's 7 days: devices refuse expired metadata, which is how they notice a
    repository frozen in the past. Warns about a role that expires soon and was not
    renewed."""

    def action() -> dict[str, Any]:
        from edgefreeze.fleet.repository import refresh_repository

        roles = refresh_repository(folder, keys)
        for role, record in roles.items():
            click.echo(
                f"{role}\tversion {record['version']}\texpires {record['expires']}", err=True
            )
            if "warning" in record:
                click.echo(f"edgefreeze: warning: {record['warning']}", err=True)
        return {"status": "ok", "roles": roles}

    _run(as_json, action)


@main.command(short_help="What a pipeline's freezing plan trains, layer by layer.")
@click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False))
@json_option
def inspect(pipeline_file: str, as_json: bool) -> None:
    """Show, for each part of the PIPELINE's model, its parameters, what of it trains, its
    state and learning rate, and where the cached stem ends; then check on one batch that
    every parameter the plan trains gets a gradient and no other does (exit 1 if not).
    Nothing is trained."""

    def action() -> dict[str, Any]:
        from edgefreeze.errors import CheckFailed
        from edgefreeze.recipes.inspect import inspect_pipeline
        from edgefreeze.schema import load_pipeline

        result = inspect_pipeline(load_pipeline(pipeline_file))
        if not as_json:
            click.echo(
                f"{result['description']}: {result['trainable_parameters']:,} of "
                f"{result['total_parameters']:,} parameters train"
            )
            click.echo(
                f"{'part':<28} {'parameters':>11} {'trainable':>11} {'state':<17} "
                f"{'from epoch':>10} {'learning rate':>13}"
            )
            for row in result["rows"]:
                rate = f"{row['learning_rate']:.3g}" if row["learning_rate"] else ""
                epoch = row["from_epoch"] or ""
                state = f"{row['state']} (cached)" if row["stem"] else row["state"]
                click.echo(
                    f"{row['part']:<28} {row['parameters']:>11,} {row['trainable']:>11,} "
                    f"{state:<17} {epoch:>10} {rate:>13}"
                )
        flow = result["gradient_flow"]
        if not flow["ok"]:
            raise CheckFailed(
                f"gradient flow: {len(flow['missing'])} trained tensors got no "
                f"gradient, {len(flow['stray'])} frozen ones got one "
                f"(such as {(flow['missing'] + flow['stray'])[0]})",
                details=result,
            )
        click.echo(
            "gradient flow: every parameter the plan trains received a gradient, and no "
            "frozen one did",
            err=True,
        )
        return {"status": "ok", **result}

    _run(as_json, action)


@main.command(short_help="Write the pipeline and command-line references into a folder.")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def reference(folder: Path) -> None:
    """Write FOLDER/pipeline.md (every key of a pipeline file: type, default, limits,
    meaning), FOLDER/pipeline.schema.json (for editors that check and complete YAML), both
    from the schema the build validates with, and FOLDER/cli.md (every command, option,
    exit code and --json status), from these commands."""

    def action() -> None:
        from edgefreeze.cli_reference import PAGE, cli_markdown
        from edgefreeze.schema.reference import write_reference

        for path in write_reference(folder, {PAGE: cli_markdown(main)}):
            click.echo(f"wrote {path}", err=True)

    _run(False, action)


@main.group()
def cache() -> None:
    """Inspect and look after the activation cache."""


def cache_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = json_option(command)
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Cache folder (else $EDGEFREEZE_CACHE_DIR, ~/.cache/edgefreeze; "
        "a pipeline's cache.dir points its builds elsewhere).",
    )(command)


def _cache_root(option: Path | None) -> Path:
    from edgefreeze.cache import cache_root

    root = cache_root(option, None, Path)  # the cache commands read no pipeline
    assert root is not None  # with no pipeline to turn it off, the cache is on
    return root


@cache.command()
@cache_options
def stats(cache_dir: Path | None, as_json: bool) -> None:
    """Entries and bytes per key set (model, tokenizer, settings)."""
    from edgefreeze.cache import admin

    def action() -> dict[str, Any]:
        result = admin.stats(_cache_root(cache_dir))
        if not as_json and not result["exists"]:
            click.echo(f"{result['dir']}: 0 entries (the folder does not exist)")
        elif not as_json:
            click.echo(
                f"{result['dir']}: {result['entries']} entries, "
                f"{result['bytes'] / 1e6:.1f} MB of activations, "
                f"{result['disk_bytes'] / 1e6:.1f} MB on disk"
            )
            for k in result["keysets"]:
                d = k["description"]
                click.echo(
                    f"  {k['keyset']}  {k['entries']:>7} entries  {k['bytes'] / 1e6:8.1f} MB"
                    f"  {d.get('model_type')} boundary {d.get('boundary')}/{d.get('depth')}"
                    f" max_length {d.get('max_length')} {k['dtype']}"
                    f" (rows kept: {d.get('kept_rows') or 'all'})"
                )
        return {"status": "ok", **result}

    _run(as_json, action)


@cache.command()
@cache_options
def verify(cache_dir: Path | None, as_json: bool) -> None:
    """Check every entry's checksum; drop corrupt ones (exit 1 if any were found)."""
    from edgefreeze.cache import admin
    from edgefreeze.errors import CheckFailed

    def action() -> dict[str, Any]:
        result = admin.verify(_cache_root(cache_dir))
        click.echo(f"checked {result['checked']} entries, {result['corrupt']} corrupt", err=True)
        if result["corrupt"]:
            raise CheckFailed(
                f"{result['corrupt']} corrupt cache entries dropped; the next "
                "build recomputes them",
                details=result,
            )
        return {"status": "ok", **result}

    _run(as_json, action)


@cache.command()
@cache_options
@click.option(
    "--older-than",
    "older_than",
    type=click.FloatRange(min=0),
    help="Drop entries not used for this many days.",
)
@click.option(
    "--max-size", help="Then drop least recently used entries down to this size (e.g. 500MB, 2GiB)."
)
def prune(
    cache_dir: Path | None, as_json: bool, older_than: float | None, max_size: str | None
) -> None:
    """Drop old or least recently used entries and reclaim their disk space."""

    from edgefreeze.cache import admin

    def action() -> dict[str, Any]:
        if older_than is None and max_size is None:
            raise ConfigError("cache prune: give --older-than DAYS and/or --max-size SIZE")
        if older_than is not None and not math.isfinite(older_than):
            raise ConfigError(f"--older-than: {older_than} is not a number of days")
        result = admin.prune(
            _cache_root(cache_dir), older_than, admin.parse_size(max_size) if max_size else None
        )
        click.echo(
            f"removed {result['removed']} entries; disk "
            f"{result['disk_bytes_before'] / 1e6:.1f} MB -> "
            f"{result['disk_bytes_after'] / 1e6:.1f} MB",
            err=True,
        )
        return {"status": "ok", **result}

    _run(as_json, action)


@cache.command()
@cache_options
def clear(cache_dir: Path | None, as_json: bool) -> None:
    """Remove every cached activation: the cache's index and shard files, nothing else
    (a folder that holds other things and no cache index is refused). Also the way to
    reset a corrupt cache."""
    from edgefreeze.cache import admin

    def action() -> dict[str, Any]:
        result = admin.clear(_cache_root(cache_dir))
        if not result["exists"]:
            click.echo(f"{result['dir']}: nothing to clear (the folder does not exist)", err=True)
            return {"status": "ok", **result}
        left = result["left"]
        kept = (
            (
                f"; left {len(left)} item(s) that are not the cache's: "
                f"{', '.join(left[:3])}{', ...' if len(left) > 3 else ''}"
            )
            if left
            else ""
        )
        click.echo(
            f"cleared {result['dir']} ({result['freed_bytes'] / 1e6:.1f} MB){kept}", err=True
        )
        return {"status": "ok", **result}

    _run(as_json, action)


@main.command(short_help="Predict with a bundle (ONNX Runtime only).")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.argument("texts", nargs=-1)
@click.option(
    "--file",
    "text_file",
    type=click.File("rb"),
    help="Read texts (or an image model's image paths) from this UTF-8 file, one "
    "per line ('-' for stdin); blank lines are skipped.",
)
@click.option(
    "--model",
    "form",
    type=click.Choice(list(FORMS)),
    help="Which of the bundle's model forms to run (default: int8, or a device bundle's "
    "first form).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    help="ONNX Runtime intra-op threads (0: its default).",
)
@trust_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per text (JSON lines); one error object on failure.",
)
def predict(
    bundle: Path,
    texts: tuple[str, ...],
    text_file: BinaryIO | None,
    form: str | None,
    threads: int,
    trusted_keys: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Predict with a bundle, using ONNX Runtime only (no torch needed). TEXTS are texts,
    or image paths for an image model."""
    from dataclasses import asdict

    from edgefreeze.runtime import Predictor

    def action() -> None:
        inputs = list(texts) + (_lines(text_file) if text_file else [])
        if not inputs:
            raise ConfigError(
                f"{text_file.name}: no texts"
                if text_file
                else "predict: give TEXT arguments or --file"
            )
        predictor = Predictor(bundle, form, threads, trusted_keys)
        modality = predictor.encoder.modality
        try:
            predictions = predictor.predict(inputs)
        except ValueError as exc:  # an input the encoder cannot read (an image file)
            raise ConfigError(f"predict: {exc}") from None
        for text, prediction in zip(inputs, predictions):
            if as_json:
                click.echo(json.dumps({modality: text, **asdict(prediction)}))
            else:
                click.echo(f"{predictor.decoder.summary(prediction)}\t{text}")

    _run(as_json, action)


def _lines(handle: BinaryIO) -> list[str]:
    """The non-blank lines of a UTF-8 text file, or one line saying where it is not UTF-8."""
    data = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{handle.name}:{line}: not UTF-8 text ({exc.reason})") from None
    return [line for line in text.splitlines() if line.strip()]


@main.command(name="bench", short_help="Latency, throughput, size and memory of a bundle's models.")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    help="Threads per model (0: the runtime's default).",
)
@click.option(
    "--sequence-length",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Tokens per input (at most the bundle's max_length; text models).",
)
@click.option(
    "--runs",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Timed batch-1 runs per model.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Measure every model this many times in turn; report medians.",
)
@json_option
def bench_command(
    bundle: Path, threads: int, sequence_length: int, runs: int, rounds: int, as_json: bool
) -> None:
    """Latency (p50/p95/p99, batch 1), throughput (batch 32), size and peak memory of a
    bundle's int8 and fp32 models and, where torch is installed, PyTorch eager."""
    from edgefreeze.runtime.bench import SPEEDUP, bench

    def action() -> dict[str, Any]:
        result = bench(bundle, threads, sequence_length, runs, rounds=rounds)
        if not as_json:
            shape = (
                f"sequence length {sequence_length}" if result["sequence_length"] else "one image"
            )
            click.echo(f"{bundle}: {shape}, threads {threads or 'default'}, {rounds} round(s)")
            click.echo(
                f"{'model':<8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
                f"{'batch-32 /s':>12} {'size MB':>9} {'peak RSS MB':>12} "
                f"{'int8 faster':>12}"
            )
            speedups = result.get(SPEEDUP, {})
            for name in (INT8.name, FP32.name, REFERENCE):
                r = result.get(name)
                if r is None:
                    why = result.get(f"{REFERENCE}_error", "torch not installed")
                    click.echo(f"{name:<8} ({why})")
                    continue
                speedup = f"{speedups[name]:11.2f}x" if name in speedups else f"{'':12}"
                click.echo(
                    f"{name:<8} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} "
                    f"{r['throughput_per_s']:12.1f} {r['size_bytes'] / 1e6:9.1f} "
                    f"{r['peak_rss_bytes'] / 1e6:12.1f} {speedup}"
                )
        return {"status": "ok", **result}

    _run(as_json, action)


@main.command(name="diff", short_help="Changed files and update payload between two bundles.")
@click.argument("old", type=click.Path(file_okay=False, path_type=Path))
@click.argument("new", type=click.Path(file_okay=False, path_type=Path))
@json_option
def diff_command(old: Path, new: Path, as_json: bool) -> None:
    """Which files changed between two bundles, and the update payload per model form."""
    from edgefreeze.runtime.diff import diff

    def action() -> dict[str, Any]:
        result = diff(old, new)
        for warning in result["warnings"]:
            click.echo(f"edgefreeze: warning: {warning}", err=True)
        if not as_json:
            for name, entry in result["files"].items():
                if entry["status"] != "unchanged":
                    size = entry["new_size"] if entry["new_size"] is not None else entry["old_size"]
                    click.echo(f"{entry['status']:<9} {name} ({size:,} bytes)")
            for form, entry in result["forms"].items():
                click.echo(
                    f"update payload for {form}: {entry['payload_bytes']:,} of "
                    f"{entry['full_bytes']:,} bytes ({entry['payload_share']:.1%})"
                )
        return {"status": "ok", **result}

    _run(as_json, action)
