"""What `edgefreeze verify-target --browser` runs: the bundle in headless Chromium with
transformers.js and ONNX Runtime Web's WebAssembly backend.

A server on 127.0.0.1 serves the page (`edgefreeze/javascript/check.html`), the npm
packages beside it, the bundle and the inputs, under a random prefix that only the page
is told; the page posts each input's token ids, outputs and reading back, and this writes
them as the Node probe does (one record per input). Chromium runs in its own process
group with its own profile folder, and is killed with the group whatever happens.

    python -m edgefreeze.recipes.browser BUNDLE FORM INPUTS.json OUTPUTS.json
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote

JAVASCRIPT = Path(__file__).resolve().parents[1] / "javascript"  # the page, bundle.mjs, npm
BROWSERS = ("chromium", "chromium-browser", "google-chrome")  # what --browser looks for
TIMEOUT_S = 3600  # verify-target's own limit for a probe


def find_browser() -> str | None:
    """The first Chromium on PATH."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


class Posted:
    """What the page posted: its results, or the one line it failed with."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: dict[str, Any] = {}
        self.error: str | None = None


class CheckHandler(SimpleHTTPRequestHandler):
    """PREFIX/bundle/... from the bundle (nothing outside it), PREFIX/inputs.json, the page
    and its packages from edgefreeze/javascript; POST PREFIX/results and PREFIX/error from
    the page. Any other path is not found."""

    prefix: str
    bundle: Path
    inputs: Path
    images: list[Path]  # an image bundle's inputs, served as PREFIX/images/N
    posted: Posted

    def translate_path(self, path: str) -> str:
        route = unquote(path.split("?", 1)[0])
        if not route.startswith(f"{self.prefix}/"):
            return str(JAVASCRIPT / ".missing")
        route = route.removeprefix(self.prefix)
        if route == "/inputs.json":
            return str(self.inputs)
        if route.startswith("/images/") and route.removeprefix("/images/").isdigit():
            number = int(route.removeprefix("/images/"))
            return str(
                self.images[number] if number < len(self.images) else JAVASCRIPT / ".missing"
            )
        if route.startswith("/bundle/"):
            found = (self.bundle / route.removeprefix("/bundle/").lstrip("/")).resolve()
            return str(found if found.is_relative_to(self.bundle) else JAVASCRIPT / ".missing")
        return super().translate_path(route)

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        try:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {"message": "the page posted something that is not JSON"}
        if self.path == f"{self.prefix}/results":
            self.posted.body = body
        elif self.path == f"{self.prefix}/error":
            message = str(body.get("message") or "the page failed")
            self.posted.error = message.splitlines()[0] if message.strip() else "the page failed"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(204)
        self.end_headers()
        self.posted.done.set()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def run_page(bundle: Path, form: str, inputs: Path, browser: str) -> Posted:
    """Serve the page for `bundle` and run Chromium on it until the page posts (or
    Chromium exits, or TIMEOUT_S passes)."""
    posted, prefix = Posted(), f"/{secrets.token_hex(8)}"
    images = _image_inputs(bundle, inputs, prefix)
    handler = type(
        "Handler",
        (CheckHandler,),
        {
            "prefix": prefix,
            "bundle": bundle.resolve(),
            "inputs": inputs,
            "images": images,
            "posted": posted,
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(JAVASCRIPT)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    page = f"{origin}/check.html?bundle={prefix}/bundle&form={form}&post={prefix}"
    with tempfile.TemporaryDirectory(prefix="edgefreeze-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
                   f"--user-data-dir={profile}", page]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not posted.done.wait(0.2) and process.poll() is None:
                if time.monotonic() > deadline:
                    break
        finally:
            _kill_group(process)
            server.shutdown()
    if not posted.done.is_set():
        posted.error = (
            f"Chromium exited (code {process.returncode}) before the page posted"
            if process.returncode not in (None, -signal.SIGKILL)
            else f"the page posted nothing within {TIMEOUT_S} s"
        )
    return posted


def _image_inputs(bundle: Path, inputs: Path, prefix: str) -> list[Path]:
    """For an image bundle, the inputs file's paths (which the page cannot open) rewritten
    as the URLs this server answers them at; the files themselves, in order."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    if manifest["task"]["inputs"] != "image":
        return []
    paths = [Path(path) for path in json.loads(inputs.read_text(encoding="utf-8"))]
    urls = [f"{prefix}/images/{number}" for number in range(len(paths))]
    inputs.write_text(json.dumps(urls), encoding="utf-8")
    return paths


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Chromium and every process it started (renderers, GPU, zygote)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_page's finally: Chromium goes too


def main(bundle: str, form: str, inputs: str, outputs: str) -> None:
    browser = find_browser()
    if browser is None:
        sys.exit(f"--browser: no Chromium on PATH ({', '.join(BROWSERS)})")
    signal.signal(signal.SIGTERM, _terminated)
    posted = run_page(Path(bundle), form, Path(inputs), browser)
    if posted.error is not None:
        sys.exit(posted.error)
    partial_path = Path(f"{outputs}.partial")
    partial_path.write_text(json.dumps(posted.body["results"]), encoding="utf-8")
    partial_path.replace(outputs)
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout
    print(
        json.dumps(
            {**posted.body["versions"], "machine": platform.machine(), "browser": version.strip()}
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
