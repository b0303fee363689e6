"""Signed bundles: `edgefreeze sign` and `build --sign-key` sign every file with a key
(OpenSSF model-signing, offline); a device that trusts the public key refuses an unsigned
bundle, one signed by another key, and any file changed, added or removed after signing,
each with one line naming it."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgefreeze.errors import BundleError
from edgefreeze.runtime import Predictor
from tests.conftest import run_cli, write_pipeline


def write_key(folder: Path, name: str) -> tuple[Path, Path, str]:
    """A P-256 key pair as PEM files, and the public key's sha256 (DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public, hashlib.sha256(der).hexdigest()


@pytest.fixture
def keys(tmp_path) -> dict[str, tuple[Path, Path, str]]:
    (tmp_path / "keys").mkdir()
    return {name: write_key(tmp_path / "keys", name) for name in ("release", "other")}


@pytest.fixture
def signed(tiny, tmp_path, keys) -> Path:
    """A copy of the tiny build, signed with the release key."""
    bundle = shutil.copytree(tiny.bundle, tmp_path / "bundle")
    result = run_cli("sign", str(bundle), "--key", str(keys["release"][0]), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["signature"] == {"file": "model.sig", "key_sha256": keys["release"][2]}
    return bundle


def refused_by_device(bundle: Path, public: Path) -> str:
    """The one line `predict --trust` exits 2 with; Predictor refuses the same way."""
    result = run_cli("predict", str(bundle), "a moving film", "--trust", str(public))
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    with pytest.raises(BundleError):
        Predictor(bundle, trusted_keys=[public])
    return lines[0]


def test_a_signed_bundle_runs_where_its_key_is_trusted(signed, keys, tmp_path):
    result = run_cli("predict", str(signed), "a moving film", "--trust", str(keys["release"][1]))
    assert result.exit_code == 0, result.stderr
    # Among several trusted keys (paths as text too), the one that signed it is named.
    predictor = Predictor(signed, trusted_keys=[str(keys["other"][1]), str(keys["release"][1])])
    assert predictor.bundle.signature.key_sha256 == keys["release"][2]
    # Reached through a link (a device's `current`), it is checked where the link points.
    (tmp_path / "current").symlink_to(signed)
    verified = run_cli("verify", str(tmp_path / "current"), "--trust", str(keys["release"][1]))
    assert verified.exit_code == 0, verified.stderr


def test_keys_of_the_wrong_kind_are_one_line_and_exit_2(signed, keys):
    private, public, _ = keys["release"]
    as_key = run_cli("sign", str(signed), "--key", str(public))
    assert as_key.exit_code == 2 and "not a PEM elliptic-curve private key" in as_key.stderr
    as_trust = run_cli("predict", str(signed), "a film", "--trust", str(private))
    assert as_trust.exit_code == 2 and "not a PEM elliptic-curve public key" in as_trust.stderr


def test_an_altered_bundle_is_not_signed(tiny, keys, tmp_path):
    bundle = shutil.copytree(tiny.bundle, tmp_path / "bundle")
    (bundle / "report.md").write_text("edited")
    result = run_cli("sign", str(bundle), "--key", str(keys["release"][0]))
    assert result.exit_code == 2 and "report.md" in result.stderr
    assert not (bundle / "model.sig").exists()


def test_every_change_after_signing_is_refused_naming_it(signed, keys, tmp_path):
    public = keys["release"][1]

    def copy(name: str) -> Path:
        return shutil.copytree(signed, tmp_path / name)

    flipped = copy("flipped")
    data = bytearray((flipped / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (flipped / "model.int8.onnx").write_bytes(bytes(data))
    assert "model.int8.onnx changed after signing" in refused_by_device(flipped, public)

    # The model and its manifest rewritten together: the digests agree, the signature not.
    rehashed = copy("rehashed")
    (rehashed / "model.int8.onnx").write_bytes(bytes(data))
    manifest = json.loads((rehashed / "manifest.json").read_text())
    manifest["files"]["model.int8.onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (rehashed / "manifest.json").write_text(json.dumps(manifest))
    assert "changed after signing" in refused_by_device(rehashed, public)

    added = copy("added")
    (added / "extra.onnx").write_bytes(b"\0")
    assert "extra.onnx added after signing" in refused_by_device(added, public)

    removed = copy("removed")
    (removed / "report.md").unlink()
    assert "report.md removed after signing" in refused_by_device(removed, public)

    assert "does not trust" in refused_by_device(signed, keys["other"][1])

    unsigned = copy("unsigned")
    (unsigned / "model.sig").unlink()
    assert "not signed" in refused_by_device(unsigned, public)


def test_a_signed_bundle_is_not_changed_by_a_target_check(signed, tiny):
    before = (signed / "manifest.json").read_bytes()
    result = run_cli(
        "verify-target", str(signed), str(tiny.pipeline), "--python", sys.executable, "--rows", "20"
    )
    assert result.exit_code == 2 and "is signed" in result.stderr
    assert (signed / "manifest.json").read_bytes() == before


@pytest.mark.build
def test_a_build_with_a_key_publishes_its_bundle_signed(tiny_pipeline, tmp_path, keys):
    private, public, fingerprint = keys["release"]
    pipeline = write_pipeline(tmp_path, {"data": {"sample_rows": 120}}, base=tiny_pipeline)
    (tmp_path / "not-a-key.pem").write_text("hello")
    bad = run_cli("build", str(pipeline), "--sign-key", str(tmp_path / "not-a-key.pem"))
    assert bad.exit_code == 2 and "not a PEM elliptic-curve private key" in bad.stderr

    result = run_cli(
        "build", str(pipeline), "--output", str(tmp_path / "b"), "--sign-key", str(private),
        "--quiet", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.json()["signature"]["key_sha256"] == fingerprint
    assert (tmp_path / "b" / "model.sig").is_file()
    assert Predictor(tmp_path / "b", trusted_keys=[public]).bundle.signature is not None


def test_every_bundle_carries_a_self_check_that_passes_here_and_catches_a_change(tiny, tmp_path):
    """The held-out inputs whose answers are clearest, with each form's outputs at the
    gate; `edgefreeze verify` runs them here. A model that computes something else (its
    file changed and the manifest re-hashed, as a broken runtime would show) fails."""
    check = json.loads((tiny.bundle / "selfcheck.json").read_text())
    assert len(check["inputs"]) == 8 and set(check["tolerance"]) >= {"fp32", "int8"}
    result = run_cli("verify", str(tiny.bundle), "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()["self_check"]
    assert report["int8"]["passed"] and report["int8"]["labels_changed"] == 0
    assert report["fp32"]["max_logit_error"] <= 1e-5  # the same runtime, the same CPU

    # The expected outputs moved by more than the tolerance: the check must fail (exit 1).
    bundle = shifted_self_check(tiny.bundle, tmp_path / "bundle", "fp32", 0.01)
    failed = run_cli("verify", str(bundle), "--model", "fp32", "--json")
    assert failed.exit_code == 1, failed.stderr
    assert "self-check failed on this machine: fp32: FAILED" in failed.stderr


def shifted_self_check(bundle: Path, copy: Path, form: str, shift: float) -> Path:
    """A copy of `bundle` whose self-check expects `form`'s logits moved by `shift`, its
    manifest re-hashed to match: a device whose runtime computes something else."""
    copy = shutil.copytree(bundle, copy)
    check = json.loads((copy / "selfcheck.json").read_text())
    for item in check["inputs"]:
        item["outputs"][form] = (np.asarray(item["outputs"][form]) + shift).tolist()
    text = json.dumps(check).encode()
    (copy / "selfcheck.json").write_bytes(text)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["selfcheck.json"] = {
        "sha256": hashlib.sha256(text).hexdigest(),
        "size": len(text),
    }
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy
