"""A bundle on the device's own CPU: its int8 model run by an aarch64 Python under
qemu-user, and by the older ONNX Runtime fleets may still run, through
`edgefreeze verify-target`; the checks land in the bundle's manifest and the figures in
docs/benchmarks.md.

    sudo apt-get install qemu-user-static          # once, with:
    sudo dpkg --add-architecture arm64 && sudo apt-get update
    python benchmarks/targets.py BUNDLE [--pipeline pipelines/rotten-tomatoes.yaml]

It builds what it needs under --root (default ~/.cache/edgefreeze/targets) without
changing the system further: Debian's arm64 Python packages unpacked with `dpkg -x` (the
sysroot), and the aarch64 and x86-64 wheels of ONNX Runtime 1.20.1 with numpy, tokenizers,
pydantic and click unpacked beside it. ONNX Runtime 1.32's aarch64 wheel crashes at import
under Debian 12's qemu 7.2; 1.20.1 runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path

from edgefreeze.recipes.verify_target import Interpreter, verify_target
from edgefreeze.runtime.manifest import TargetCheck
from edgefreeze.schema import load_pipeline

DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "rotten-tomatoes.yaml"
OLD_ORT = "1.20.1"
# Debian 12's arm64 Python 3.11 and the libraries it and the wheels load.
ARM64_PACKAGES = [
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "libc6",
    "libexpat1",
    "zlib1g",
    "libssl3",
    "libffi8",
    "libgcc-s1",
    "libstdc++6",
    "libbz2-1.0",
    "liblzma5",
    "libsqlite3-0",
    "libuuid1",
    "libtinfo6",
    "libncursesw6",
    "libreadline8",
    "libdb5.3",
    "libgdbm6",
    "libnsl2",
    "libtirpc3",
    "libcrypt1",
    "libgssapi-krb5-2",
    "libkrb5-3",
    "libk5crypto3",
    "libkrb5support0",
    "libcom-err2",
    "libkeyutils1",
]
# Pinned to the set that ran here under emulation (numpy 2.2 beside ONNX Runtime 1.20.1).
RUNTIME_WHEELS = [
    f"onnxruntime=={OLD_ORT}",
    "numpy==2.2.6",
    "tokenizers==0.22.2",
    "pydantic==2.14.3",
    "click==8.5.1",
]


def run(*command: str, cwd: Path | None = None) -> None:
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def arm64_sysroot(root: Path) -> Path:
    """Debian's arm64 Python and its libraries, unpacked (no installation)."""
    sysroot = root / "arm64-sysroot"
    if (sysroot / "usr" / "bin" / "python3.11").exists():
        return sysroot
    foreign = subprocess.run(
        ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True
    ).stdout.split()
    if "arm64" not in foreign:
        sys.exit(
            "needs Debian's arm64 packages: sudo dpkg --add-architecture arm64 && "
            "sudo apt-get update"
        )
    debs = root / "arm64-debs"
    debs.mkdir(parents=True, exist_ok=True)
    run("apt-get", "download", *(f"{name}:arm64" for name in ARM64_PACKAGES), cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        run("dpkg", "-x", str(deb), str(sysroot))
    return sysroot


def wheels(root: Path, platforms: list[str], name: str, packages: list[str]) -> Path:
    """`packages` for CPython 3.11 on `platforms`, unpacked into one folder."""
    site = root / name
    if site.is_dir():
        return site
    downloads = root / f"{name}-wheels"
    platform_options = [option for p in platforms for option in ("--platform", p)]
    run(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        *platform_options,
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--abi",
        "abi3",
        "--abi",
        "none",
        "--dest",
        str(downloads),
        *packages,
    )
    partial = root / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for wheel in downloads.glob("*.whl"):
        zipfile.ZipFile(wheel).extractall(partial)
    partial.rename(site)
    return site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE)
    parser.add_argument(
        "--root", type=Path, default=Path.home() / ".cache" / "edgefreeze" / "targets"
    )
    parser.add_argument("--rows", type=int, help="only the first N held-out rows")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    if shutil.which("qemu-aarch64-static") is None:
        sys.exit("needs qemu-user: sudo apt-get install qemu-user-static")
    args.root.mkdir(parents=True, exist_ok=True)
    sysroot = arm64_sysroot(args.root)
    arm_site = wheels(
        args.root,
        ["manylinux_2_28_aarch64", "manylinux2014_aarch64"],
        "aarch64-site",
        RUNTIME_WHEELS,
    )
    x86_old = wheels(
        args.root,
        ["manylinux_2_28_x86_64", "manylinux2014_x86_64"],
        f"x86_64-onnxruntime-{OLD_ORT}",
        ["--no-deps", f"onnxruntime=={OLD_ORT}"],
    )
    pipeline = load_pipeline(args.pipeline)
    targets = {
        "this CPU, today's ONNX Runtime": Interpreter(Path(sys.executable)),
        f"this CPU, ONNX Runtime {OLD_ORT}": Interpreter(Path(sys.executable), paths=(x86_old,)),
        "arm64 under qemu-user": Interpreter(
            sysroot / "usr" / "bin" / "python3.11", sysroot, (arm_site,)
        ),
    }
    checks: dict[str, tuple[TargetCheck, float]] = {}
    for name, interpreter in targets.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        checks[name] = (
            verify_target(args.bundle, pipeline, interpreter, rows=args.rows),
            time.perf_counter() - start,
        )
    lines = [
        "<!-- targets:start -->",
        "## On the device's CPU and older ONNX Runtimes",
        "",
        f"Command: `{' '.join(['python benchmarks/targets.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {cpu_name()}. `edgefreeze verify-target` ran the int8 model of a "
        "default build (`edgefreeze build pipelines/rotten-tomatoes.yaml`) on its "
        "held-out rows, one text at a time, with each interpreter; agreement and logit "
        "error are against this CPU with today's ONNX Runtime (the gate's own run).",
        "",
        "| target | machine | ONNX Runtime | rows | accuracy | agreement | max logit "
        "difference | seconds | passed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (check, seconds) in checks.items():
        m = check.metrics
        lines.append(
            f"| {name} | {check.machine} | {check.onnxruntime} | {check.rows:,} | "
            f"{m['accuracy']:.2%} | {m['agreement']:.2%} | "
            f"{m['max_logit_error']:.3g} | {seconds:.0f} | {check.passed} |"
        )
    emulator = next((c.emulated_by for c, _ in checks.values() if c.emulated_by), None)
    lines += [
        "",
        f"Emulator: {emulator}. The checks are in the bundle manifest's `targets`.",
        "<!-- targets:end -->",
    ]
    section = "\n".join(lines) + "\n"
    write_section(args.out, section, "targets")
    print(section)


if __name__ == "__main__":
    main()
