"""The command line: thin; each command calls one function and maps failures to exit codes.

Exit codes: 0 shipped, 1 the gate refused, 2 bad input or configuration, 3 anything else.
With --json, stdout carries exactly one JSON object whatever happens.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from edgefreeze import __version__
from edgefreeze.errors import ConfigError, EdgefreezeError, GateRefused


def _summary(manifest: dict) -> dict:
    return {"metrics": manifest["metrics"], "gate": manifest["gate"], "cache": manifest["cache"],
            "sizes": manifest["sizes"], "timings_s": manifest["timings_s"],
            "trainable_parameters": manifest["training"]["trainable_parameters"]}


def _run(as_json: bool, action: Callable[[], dict]) -> None:
    """Run a command body; turn every outcome into one exit code and, with --json, one
    JSON object on stdout. Tracebacks only when EDGEFREEZE_TRACEBACK=1."""
    try:
        payload, code = action(), 0
    except GateRefused as exc:
        payload = {"status": "refused", "report": str(exc.report_dir), **_summary(exc.manifest)}
        code = exc.exit_code
        click.echo(f"edgefreeze: {exc}", err=True)
    except EdgefreezeError as exc:
        payload, code = {"status": "error", "message": str(exc)}, exc.exit_code
        click.echo(f"edgefreeze: error: {exc}", err=True)
    except KeyboardInterrupt:
        payload, code = {"status": "interrupted"}, 130
        click.echo("edgefreeze: interrupted", err=True)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one readable line
        if os.environ.get("EDGEFREEZE_TRACEBACK") == "1":
            traceback.print_exc()
        payload, code = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}, 3
        click.echo(f"edgefreeze: unexpected error: {type(exc).__name__}: {exc} "
                   "(set EDGEFREEZE_TRACEBACK=1 for the traceback)", err=True)
    if as_json:
        click.echo(json.dumps({"exit_code": code, **payload}, indent=2))
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefreeze")
def main() -> None:
    """Fine-tune the top of a pretrained transformer, export it to ONNX, quantize it to
    int8, and ship it only if it passes the accuracy gate."""


def build_options(command: Callable) -> Callable:
    """The options `build` and `retrain` share."""
    options = [
        click.argument("pipeline_file", metavar="PIPELINE", type=click.Path(dir_okay=False)),
        click.option("--output", type=click.Path(file_okay=False, path_type=Path),
                     help="Bundle folder (default: the pipeline's output, else models/NAME/vN)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
                     help="Training device; overrides the pipeline's train.device."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Activation cache folder (else $EDGEFREEZE_CACHE_DIR, the pipeline's "
                          "cache.dir, ~/.cache/edgefreeze)."),
        click.option("--no-cache", is_flag=True, help="Run the frozen stem live every epoch."),
        click.option("--quiet", "-q", is_flag=True, help="No progress output."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON result on stdout."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _build(pipeline_file: str, output: Path | None, device: str | None, cache_dir: Path | None,
           no_cache: bool, quiet: bool, as_json: bool, added: tuple[Path, ...] = ()) -> None:
    def action() -> dict:
        from edgefreeze.build import build as run_build
        from edgefreeze.progress import Reporter
        from edgefreeze.spec import load_pipeline

        pipeline = load_pipeline(pipeline_file)
        result = run_build(pipeline, output=output, device=device, reporter=Reporter(quiet),
                           cache_dir=cache_dir, use_cache=False if no_cache else None,
                           added_rows=list(added))
        if not quiet:
            int8 = result.manifest["metrics"]["onnx_int8"]
            click.echo(f"shipped {result.path} (int8 accuracy {int8['accuracy']:.4f}, "
                       f"agreement {int8['agreement']:.4f})", err=True)
        return {"status": "shipped", "bundle": str(result.path), **_summary(result.manifest)}

    _run(as_json, action)


@main.command()
@build_options
def build(**options) -> None:
    """Train, export, quantize, gate and publish the bundle a PIPELINE file describes."""
    _build(**options)


@main.command()
@build_options
@click.option("--add", "added", multiple=True, required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A CSV or JSONL file of new labelled rows (same columns); repeatable.")
def retrain(**options) -> None:
    """Retrain the top on the PIPELINE's data plus new rows, then export, quantize, gate
    and publish like `build`. With the cache, only the new rows pass the frozen stem."""
    _build(**options)


@main.group()
def cache() -> None:
    """Inspect and look after the activation cache."""


def cache_options(command: Callable) -> Callable:
    command = click.option("--json", "as_json", is_flag=True, help="Print one JSON result.")(command)
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                        help="Cache folder (else $EDGEFREEZE_CACHE_DIR, ~/.cache/edgefreeze).")(command)


def _cache_root(option: Path | None) -> Path:
    from edgefreeze.cache import cache_root

    return cache_root(option, None, Path)


@cache.command()
@cache_options
def stats(cache_dir: Path | None, as_json: bool) -> None:
    """Entries and bytes per key set (model, tokenizer, settings)."""
    from edgefreeze.cache import admin

    def action() -> dict:
        result = admin.stats(_cache_root(cache_dir))
        if not as_json:
            click.echo(f"{result['dir']}: {result['entries']} entries, "
                       f"{result['bytes'] / 1e6:.1f} MB of activations, "
                       f"{result['disk_bytes'] / 1e6:.1f} MB on disk")
            for k in result["keysets"]:
                d = k["description"]
                click.echo(f"  {k['keyset']}  {k['entries']:>7} entries  {k['bytes'] / 1e6:8.1f} MB"
                           f"  {d.get('model_type')} boundary {d.get('boundary')}/{d.get('depth')}"
                           f" max_length {d.get('max_length')} {k['dtype']} ({d.get('kept')})")
        return {"status": "ok", **result}

    _run(as_json, action)


@cache.command()
@cache_options
def verify(cache_dir: Path | None, as_json: bool) -> None:
    """Check every entry's checksum; drop corrupt ones (exit 1 if any were found)."""
    from edgefreeze.cache import admin
    from edgefreeze.errors import CheckFailed

    def action() -> dict:
        result = admin.verify(_cache_root(cache_dir))
        click.echo(f"checked {result['checked']} entries, {result['corrupt']} corrupt", err=True)
        if result["corrupt"]:
            raise CheckFailed(f"{result['corrupt']} corrupt cache entries dropped; the next "
                              "build recomputes them")
        return {"status": "ok", **result}

    _run(as_json, action)


@cache.command()
@cache_options
@click.option("--older-than", "older_than", type=click.FloatRange(min=0),
              help="Drop entries not used for this many days.")
@click.option("--max-size", help="Then drop least recently used entries down to this size "
                                 "(e.g. 500MB, 2GiB).")
def prune(cache_dir: Path | None, as_json: bool, older_than: float | None,
          max_size: str | None) -> None:
    """Drop old or least recently used entries and reclaim their disk space."""
    from edgefreeze.cache import admin

    def action() -> dict:
        if older_than is None and max_size is None:
            raise ConfigError("cache prune: give --older-than DAYS and/or --max-size SIZE")
        result = admin.prune(_cache_root(cache_dir), older_than,
                             admin.parse_size(max_size) if max_size else None)
        click.echo(f"removed {result['removed']} entries; disk "
                   f"{result['disk_bytes_before'] / 1e6:.1f} MB -> "
                   f"{result['disk_bytes_after'] / 1e6:.1f} MB", err=True)
        return {"status": "ok", **result}

    _run(as_json, action)


@cache.command()
@cache_options
def clear(cache_dir: Path | None, as_json: bool) -> None:
    """Remove every cached activation."""
    from edgefreeze.cache import admin

    def action() -> dict:
        result = admin.clear(_cache_root(cache_dir))
        click.echo(f"cleared {result['dir']} ({result['freed_bytes'] / 1e6:.1f} MB)", err=True)
        return {"status": "ok", **result}

    _run(as_json, action)
