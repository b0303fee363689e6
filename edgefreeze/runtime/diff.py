"""What a device must download to go from one bundle to the next (`edgefreeze diff`).

Files are compared by the sha256 in each manifest. The update payload of a model form
(composed int8, stem + top int8, ...) is the bytes of the files that form needs and that
changed: after a retrain that leaves the stem's bytes alone, the split form ships only
the top.
"""

from __future__ import annotations

from pathlib import Path

from edgefreeze.runtime.bundle import MODEL_FILES, Bundle

DEVICE_FILES = ("manifest.json", "labels.json", "tokenizer.json")  # what the runtime reads


def diff(old_path: Path, new_path: Path) -> dict:
    old, new = Bundle(old_path), Bundle(new_path)
    old_files, new_files = old.manifest["files"], new.manifest["files"]
    files = {}
    for name in sorted(set(old_files) | set(new_files)):
        before, after = old_files.get(name), new_files.get(name)
        status = ("added" if before is None else "removed" if after is None
                  else "unchanged" if before["sha256"] == after["sha256"] else "changed")
        files[name] = {"status": status, "old_size": before and before["size"],
                       "new_size": after and after["size"]}
    files["manifest.json"] = {"status": "changed",
                              "old_size": (old.path / "manifest.json").stat().st_size,
                              "new_size": (new.path / "manifest.json").stat().st_size}
    forms = {}
    for variant in new.variants():
        needed = [*MODEL_FILES[variant], *DEVICE_FILES]
        full = sum(files[name]["new_size"] for name in needed)
        payload = sum(files[name]["new_size"] for name in needed
                      if files[name]["status"] in ("changed", "added")
                      or variant not in old.variants())
        forms[variant] = {"files": needed, "payload_bytes": payload, "full_bytes": full,
                          "payload_share": payload / full}
    return {"old": str(old_path), "new": str(new_path), "files": files, "forms": forms}
