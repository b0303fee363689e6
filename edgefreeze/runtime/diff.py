"""What a device must download to go from one bundle to the next (`edgefreeze diff`).

Files are compared by the sha256 in each manifest. The update payload of a model form
(composed int8, stem + top int8, ...) is the bytes of the files that form needs and that
changed: after a retrain that leaves the stem's bytes alone, the split form ships only
the top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.bundle import LABELS, MANIFEST, Bundle


def diff(old_path: Path, new_path: Path) -> dict[str, Any]:
    """Per-file status and, per model form of the new bundle, the bytes a device that has
    the old one must download. Both bundles' files are checked against their manifests
    first: a payload computed from a tampered bundle would be a wrong answer."""
    old, new = Bundle(old_path), Bundle(new_path)
    old_files, new_files = old.manifest.files, new.manifest.files
    for bundle in (old, new):
        for name in bundle.manifest.files:
            bundle.verified(name)
    files: dict[str, dict[str, Any]] = {}
    for name in sorted(set(old_files) | set(new_files)):
        before, after = old_files.get(name), new_files.get(name)
        status = (
            "added"
            if before is None
            else "removed"
            if after is None
            else "unchanged"
            if before.sha256 == after.sha256
            else "changed"
        )
        files[name] = {
            "status": status,
            "old_size": before.size if before else None,
            "new_size": after.size if after else None,
        }
    manifests = [b.path / MANIFEST for b in (old, new)]
    files[MANIFEST] = {
        "status": "unchanged"
        if file_sha256(manifests[0]) == file_sha256(manifests[1])
        else "changed",
        "old_size": manifests[0].stat().st_size,
        "new_size": manifests[1].stat().st_size,
    }
    old_forms = {form.name for form in old.forms()}
    device_files = (MANIFEST, LABELS, *new.input_files())  # what the runtime reads
    forms = {}
    for form in new.forms():
        needed = [*form.files, *device_files]
        full = sum(files[name]["new_size"] for name in needed)
        payload = sum(
            files[name]["new_size"]
            for name in needed
            if files[name]["status"] in ("changed", "added") or form.name not in old_forms
        )
        forms[form.name] = {
            "files": needed,
            "payload_bytes": payload,
            "full_bytes": full,
            "payload_share": payload / full,
        }
    return {
        "old": str(old_path),
        "new": str(new_path),
        "files": files,
        "forms": forms,
        "warnings": _warnings(old, new),
    }


def _warnings(old: Bundle, new: Bundle) -> list[str]:
    """Differences that make the new bundle more than an update of the old one."""
    warnings = []
    old_name, new_name = old.manifest.pipeline.name, new.manifest.pipeline.name
    if old_name != new_name:
        warnings.append(f"different pipelines: {old_name!r} -> {new_name!r}")
    if old.manifest.task.name != new.manifest.task.name:
        warnings.append(
            f"different tasks: {old.manifest.task.name!r} -> {new.manifest.task.name!r}"
        )
    if old.labels != new.labels:
        warnings.append(f"labels changed: {old.labels} -> {new.labels}")
    if old.max_length != new.max_length:
        warnings.append(f"max_length changed: {old.max_length} -> {new.max_length}")
    return warnings
