"""Bundles signed as a whole, and checked against the keys a device trusts.

The manifest's digests catch a file changed by accident; they cannot catch someone who
rewrites a model and its manifest together. A signature over every file of the bundle,
made with a key only the release pipeline holds, can. OpenSSF's model-signing library
signs a folder as a whole (each file's digest, in a Sigstore bundle) and verifies it
offline with a public key; edgefreeze uses its elliptic-curve key mode, so neither side
needs a network. Any file changed, added or removed after signing, or a signature by
another key, is refused with one line naming it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from edgefreeze.errors import BundleError, ConfigError

SIGNATURE = "model.sig"
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model-signing signs with
MISSING_LIBRARY = "signed bundles need model-signing: pip install 'edgefreeze[signing]'"


@dataclass(frozen=True)
class SignatureRecord:
    """What a release pipeline records of a signature: which file, which key."""

    file: str
    key_sha256: str  # of the public key (DER SubjectPublicKeyInfo)

    def as_json(self) -> dict[str, str]:
        return {"file": self.file, "key_sha256": self.key_sha256}


def key_fingerprint(key: str | Path, private: bool = False) -> str:
    """sha256 of the public key in `key`: a PEM elliptic-curve public key, or with
    `private` a PEM private key (unencrypted, on a curve model-signing signs with). Exit 2
    on any other file."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:  # model-signing brings it
        raise ConfigError(MISSING_LIBRARY) from None
    key = Path(key)
    try:
        data = key.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read the key ({exc.strerror})") from None
    kind = "private" if private else "public"
    try:
        loaded: Any = (
            serialization.load_pem_private_key(data, password=None).public_key()
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError):
        loaded = None
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name not in CURVES:
        raise ConfigError(
            f"{key}: not a PEM elliptic-curve {kind} key (unencrypted; {', '.join(CURVES)})"
        )
    der = loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def sign_bundle(bundle: Path, private_key: str | Path) -> SignatureRecord:
    """Sign every file of `bundle` (but the signature) with `private_key`; the signature
    is written beside the bundle first and renamed in, so it is whole or absent."""
    fingerprint = key_fingerprint(private_key, private=True)
    signing, hashing = _library("signing", "hashing")
    partial = bundle.with_name(f".{bundle.name}.{SIGNATURE}.partial")
    try:
        signing.Config().use_elliptic_key_signer(private_key=Path(private_key)).set_hashing_config(
            _files(hashing)
        ).sign(bundle, partial)
        partial.replace(bundle / SIGNATURE)
    except OSError as exc:
        raise ConfigError(f"{bundle}: cannot sign ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{bundle}: cannot sign ({exc})") from None
    finally:
        partial.unlink(missing_ok=True)
    return SignatureRecord(SIGNATURE, fingerprint)


def verify_bundle(bundle: Path, trusted_keys: Sequence[str | Path]) -> SignatureRecord:
    """The signature of `bundle` by one of `trusted_keys`; BundleError (exit 2) with one
    line when it is unsigned, signed by another key, or any file changed since."""
    if not (bundle / SIGNATURE).is_file():
        raise BundleError(f"{bundle}: not signed ({SIGNATURE} is missing); refusing it")
    verifying, hashing = _library("verifying", "hashing")
    problems = []
    for key in trusted_keys:
        fingerprint = key_fingerprint(key)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=Path(key)).set_hashing_config(
                _files(hashing)
            ).verify(bundle, bundle / SIGNATURE)
        except Exception as exc:  # noqa: BLE001 - the library raises ValueError and parse errors
            problems.append(_reason(str(exc)))
            continue
        return SignatureRecord(SIGNATURE, fingerprint)
    changed = [p for p in problems if p != OTHER_KEY]
    raise BundleError(f"{bundle}: {changed[0] if changed else OTHER_KEY}; refusing it")


OTHER_KEY = "signed by a key this device does not trust"


def _reason(message: str) -> str:
    """model-signing's error as one line: what changed, or whose key it was."""
    if message.startswith("Key mismatch"):
        return OTHER_KEY
    for pattern, what in (
        (r"Hash mismatch for '([^']+)'", "{} changed after signing"),
        (r"Extra files found in model '[^']*': ([^\]\"']+)", "{} added after signing"),
        (r"Missing files in model '[^']*': ([^\]\"']+)", "{} removed after signing"),
    ):
        found = re.search(pattern, message)
        if found:
            return what.format(found.group(1).strip())
    first = message.splitlines()[0][:200] if message.strip() else "no reason given"
    return f"{SIGNATURE} does not verify ({first})"


def _files(hashing: Any) -> Any:
    """Every file of the bundle but the signature itself."""
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def _library(*modules: str) -> list[Any]:
    """model-signing's modules, imported when a bundle is signed or checked (the device
    install does without it unless it checks signatures)."""
    try:
        return [import_module(f"model_signing.{name}") for name in modules]
    except ImportError:
        raise ConfigError(MISSING_LIBRARY) from None
