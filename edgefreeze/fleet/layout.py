"""What the repository and the devices agree on: where metadata and targets live, the
target path of each release file, and the index of a model's releases.

    REPO/metadata/   N.root.json, root.json, N.targets.json, N.snapshot.json, timestamp.json
    REPO/targets/    NAME/releases.json and NAME/VERSION/FILE, each stored as
                     HASH.FILE (TUF's consistent snapshots: a file never changes in place,
                     so a device mid-update never reads half of two releases)

The index is itself a TUF target (so it is signed by the targets role); it lists each
release's files with their digests, which is how a device tells which of them it already
serves and need not fetch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgefreeze.errors import BundleError
from edgefreeze.runtime.manifest import FileRecord, inside_the_bundle

METADATA = "metadata"
TARGETS = "targets"
INDEX = "releases.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a path segment of every target path


class Release(BaseModel):
    """One published bundle: its version in the repository and every file it holds."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    created: str  # the bundle's build time, from its manifest
    manifest_sha256: str
    files: dict[str, FileRecord]  # relative path -> digest; manifest.json included

    _inside_the_bundle = field_validator("files")(inside_the_bundle)

    @property
    def size(self) -> int:
        return sum(file.size for file in self.files.values())


class ReleaseIndex(BaseModel):
    """Every release of one model (a pipeline name), oldest first."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    releases: list[Release] = []

    @classmethod
    def parse(cls, text: bytes, where: str) -> ReleaseIndex:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            place = ".".join(str(part) for part in first["loc"]) or "(top)"
            raise BundleError(f"{where}: not a release index ({place}: {first['msg']})") from None

    def latest(self) -> Release | None:
        return self.releases[-1] if self.releases else None


def index_path(name: str) -> str:
    """The target path of `name`'s release index."""
    return f"{name}/{INDEX}"


def file_path(name: str, version: int, file: str) -> str:
    """The target path of one file of a release."""
    return f"{name}/{version}/{file}"
