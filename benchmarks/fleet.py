"""A fleet of devices updating from a TUF repository served over HTTP on 127.0.0.1:
bytes fetched and install time per device for a full release, a retrain of the top
shipped as a delta, a release whose self-check fails on the devices, and the poll after.

Three releases of `examples/reviews-split.yaml` (the real MiniLM, stem and top exported
apart), each cut to the split int8 form (`edgefreeze slim`) and signed:
  1. the first build;
  2. `edgefreeze retrain --add examples/new-reviews.jsonl --from` release 1: the stem is
     unchanged, so a device fetches the new top and the small files;
  3. release 2 with its self-check's expected outputs moved by 1.0 and signed again: what
     a device sees when its ONNX Runtime computes something else than the gate's (the
     signature is valid, so only the self-check catches it).
Each device is its own folder and process (`edgefreeze device update`), run one after
another; the server counts the bytes it sends to each.

    python benchmarks/fleet.py [--devices 20] [--work DIR] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from _docs import BENCHMARKS_MD, cpu_name, write_section  # benchmarks/ is on sys.path
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgefreeze.hashing import file_sha256

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "examples" / "reviews-split.yaml"
NEW_ROWS = ROOT / "examples" / "new-reviews.jsonl"
FORM = "split-int8"


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves the repository folder and adds every body byte it sends to `sent`."""

    sent = 0
    lock = threading.Lock()

    def copyfile(self, source: Any, outputfile: Any) -> None:
        before = source.tell()
        super().copyfile(source, outputfile)
        with CountingHandler.lock:
            CountingHandler.sent += source.tell() - before

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def edgefreeze(*args: str) -> dict[str, Any]:
    """One CLI call in its own process, as a device or a release pipeline runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "edgefreeze", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    result = json.loads(done.stdout) if done.stdout.strip() else {}
    result["exit_code"] = done.returncode
    if done.returncode not in (0, 1):
        sys.exit(f"edgefreeze {' '.join(args)} failed: {done.stderr.strip()}")
    return result


def write_key(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "release.pem", folder / "release.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def failing_copy(bundle: Path, copy: Path) -> Path:
    """`bundle` with its self-check's expected outputs moved by 1.0, manifest re-hashed."""
    copy = Path(shutil.copytree(bundle, copy))
    check = json.loads((copy / "selfcheck.json").read_text())
    for item in check["inputs"]:
        item["outputs"][FORM] = (np.asarray(item["outputs"][FORM]) + 1.0).tolist()
    (copy / "selfcheck.json").write_text(json.dumps(check))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["selfcheck.json"] = {
        "sha256": file_sha256(copy / "selfcheck.json"),
        "size": (copy / "selfcheck.json").stat().st_size,
    }
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "model.sig").unlink(missing_ok=True)
    return copy


def releases(work: Path, key: Path) -> tuple[list[Path], list[Path]]:
    """The three full bundles and their signed split-int8 device bundles."""
    full = [work / "full-1", work / "full-2"]
    edgefreeze("build", str(PIPELINE), "--output", str(full[0]), "-q")
    edgefreeze(
        "retrain",
        str(PIPELINE),
        "--add",
        str(NEW_ROWS),
        "--from",
        str(full[0]),
        "--output",
        str(full[1]),
        "-q",
    )
    full.append(failing_copy(full[1], work / "full-3"))
    cut = []
    for number, bundle in enumerate(full, start=1):
        device = work / f"device-{number}"
        edgefreeze(
            "slim", str(bundle), "--model", FORM, "--output", str(device), "--sign-key", str(key)
        )
        cut.append(device)
    return full, cut


def changed_bytes(old: Path, new: Path) -> tuple[int, int]:
    """Bytes of `new` whose file differs from `old`'s (what a device holding `old`
    fetches), and `new`'s whole size."""
    total = changed = 0
    for path in new.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        total += size
        twin = old / path.relative_to(new)
        if not twin.is_file() or file_sha256(twin) != file_sha256(path):
            changed += size
    return changed, total


def roll_out(devices: list[Path], url: str, bootstrap: Path, public: Path) -> list[dict[str, Any]]:
    """Every device updates once, one after another; bytes and time per device."""
    rows = []
    for root in devices:
        CountingHandler.sent = 0
        started = time.perf_counter()
        result = edgefreeze(
            "device",
            "update",
            "--root",
            str(root),
            "--repo",
            url,
            "--name",
            "reviews-split",
            "--bootstrap",
            str(bootstrap),
            "--trust",
            str(public),
        )
        result["wall_s"] = time.perf_counter() - started
        result["served_bytes"] = CountingHandler.sent
        rows.append(result)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--work", type=Path, help="Keep the bundles and devices here.")
    parser.add_argument("--out", type=Path, default=BENCHMARKS_MD)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgefreeze-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    private, public = write_key(work)
    full, cut = releases(work, private)
    repo, keys = work / "repo", work / "keys"
    edgefreeze("repo", "init", str(repo), "--keys", str(keys))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(CountingHandler, directory=str(repo)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    devices = [work / "devices" / f"{number:02d}" for number in range(args.devices)]
    rounds: list[list[dict[str, Any]]] = []
    try:
        for number, bundle in enumerate(cut, start=1):
            edgefreeze("repo", "add", str(repo), str(bundle), "--keys", str(keys))
            rounds.append(roll_out(devices, url, repo / "metadata" / "root.json", public))
            print(f"release {number}: {[row['exit_code'] for row in rounds[-1]]}", file=sys.stderr)
        rounds.append(roll_out(devices, url, repo / "metadata" / "root.json", public))  # a poll
    finally:
        server.shutdown()
    ends = [edgefreeze("device", "status", "--root", str(root)) for root in devices]
    section = report(args, full, cut, rounds, ends)
    write_section(args.out, section, "fleet")
    print(section)
    if not args.work:
        shutil.rmtree(work)


def report(
    args: argparse.Namespace,
    full: list[Path],
    cut: list[Path],
    rounds: list[list[dict]],
    ends: list[dict],
) -> str:
    whole = sum(p.stat().st_size for p in cut[0].rglob("*") if p.is_file())
    delta_full, size_full = changed_bytes(full[0], full[1])
    names = [
        "1: full release",
        "2: retrain of the top (delta)",
        "3: self-check fails on the devices",
        "the next poll (nothing new)",
    ]
    lines = [
        "<!-- fleet:start -->",
        "## A fleet updating over TUF",
        "",
        f"Command: `python benchmarks/fleet.py --devices {args.devices}`. Machine: {cpu_name()}; "
        f"{os.cpu_count()} cores; the repository served by Python's HTTP server on 127.0.0.1, "
        "each device its own folder and `edgefreeze device update` process, one after "
        "another. Releases of `examples/reviews-split.yaml` cut to the split int8 form "
        f"(`edgefreeze slim`, {whole:,} bytes) and signed; devices trust the key.",
        "",
        "| release | exit codes | files fetched | bytes served per device (median) | "
        "share of the device bundle | time per device, median (max) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in zip(names, rounds):
        codes = sorted({row["exit_code"] for row in rows})
        served = statistics.median(row["served_bytes"] for row in rows)
        times = [row["wall_s"] for row in rows]
        fetched = statistics.median(len(row.get("fetched", [])) for row in rows)
        lines.append(
            f"| {name} | {', '.join(map(str, codes))} | {fetched:g} | {served:,.0f} | "
            f"{served / whole:.1%} | {statistics.median(times):.2f} s ({max(times):.2f} s) |"
        )
    created = json.loads((cut[1] / "manifest.json").read_text())["created"]
    on_release_2 = sum(
        1
        for end in ends
        if end["versions"].get(end["current"], "").endswith(created)
        and any("self-check failed" in why for why in end["refused"].values())
    )
    lines += [
        "",
        f"Bytes served include the TUF metadata and the release index. At the end "
        f"{on_release_2} of {len(ends)} devices serve release 2 and list release 3 as refused "
        "(its self-check failed on each, so none switched to it, and the next poll "
        "fetched only metadata). Without `slim`, a device holding the whole bundle would fetch "
        f"{delta_full:,} of {size_full:,} bytes ({delta_full / size_full:.0%}) for the same "
        "retrain: the composed `model.onnx` and `model.int8.onnx`, which a retrain rewrites, "
        "ride along.",
        "<!-- fleet:end -->",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
