"""Device bundles: a copy of a bundle with only what a device running some of its model
forms needs (`edgefreeze slim`).

A build ships every form it gated (int8 and fp32, the split stem and top with
`export.split`) and the trained parameters `retrain --from` reads. A device runs one form:
the rest is bytes it stores and, on every release, downloads. After a head-only retrain
a split-int8 device bundle changes only in its top, so an update fetches the top and the
small files; the composed models, which a retrain rewrites whole, are not there. The cut
bundle's manifest lists the files it keeps (and records the forms and the bundle it was
cut from), so every device check applies to it unchanged; a changed manifest needs a new
signature, so `--sign-key` signs it as `edgefreeze sign` does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from edgefreeze.atomic import sync_tree, write_text
from edgefreeze.errors import ConfigError
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import MANIFEST, Bundle
from edgefreeze.runtime.forms import FORMS
from edgefreeze.runtime.manifest import Manifest, SlimRecord
from edgefreeze.runtime.signature import sign_bundle

NOT_FOR_DEVICES = ("trainable.safetensors",)  # the trained top as torch reads it (retrain)


def slim_bundle(
    source: Path,
    output: Path,
    forms: Sequence[str],
    sign_key: Path | None = None,
    trusted_keys: Sequence[Path] = (),
) -> Manifest:
    """Write to `output` (which must not exist) the bundle at `source` cut to `forms`:
    every file they and the input encoder need, the labels, config, self-check and
    reports; not the other forms' models nor the training's parameters."""
    bundle = Bundle(source, trusted_keys)
    carried = {form.name for form in bundle.forms()}
    missing = [form for form in forms if form not in carried]
    if missing or not forms:
        raise ConfigError(
            f"{source}: carries {', '.join(sorted(carried))}; cannot keep "
            f"{', '.join(missing) or 'no form'}"
        )
    if output.exists() or output.is_symlink():
        raise ConfigError(f"{output}: exists; choose a new --output")
    needed = {name for form in forms for name in FORMS[form].files}
    dropped = sorted(
        name
        for name in bundle.manifest.files
        if name not in needed
        and (name in NOT_FOR_DEVICES or any(name in form.files for form in bundle.forms()))
    )
    kept = {name: record for name, record in bundle.manifest.files.items() if name not in dropped}
    slim = SlimRecord(
        forms=list(forms),
        from_manifest_sha256=file_sha256(bundle.path / MANIFEST),
        dropped=dropped,
    )
    javascript = {form: how for form, how in bundle.manifest.javascript.items() if form in forms}
    manifest = bundle.manifest.model_copy(
        update={"files": kept, "slim": slim, "javascript": javascript}
    )
    staging = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        staging.mkdir(parents=True)
        for name in kept:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.verified(name), staging / name)
        write_text(staging / MANIFEST, manifest.to_json())
        if sign_key is not None:
            sign_bundle(staging, sign_key)
        sync_tree(staging)
        os.rename(staging, output)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write the device bundle ({exc.strerror})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
