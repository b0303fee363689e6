"""What `edgefreeze verify-target --browser` runs: the bundle in headless Chromium with
transformers.js and ONNX Runtime Web's WebAssembly backend.

A server on 127.0.0.1 serves the page (`edgefreeze/javascript/check.html`), the npm
packages beside it, the bundle and the inputs; the page posts each input's token ids and
outputs back, and this writes them as the Node probe does (one record per input).

    python -m edgefreeze.recipes.browser BUNDLE FORM INPUTS.json OUTPUTS.json
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

JAVASCRIPT = Path(__file__).resolve().parents[1] / "javascript"  # the page, bundle.mjs, npm
BROWSERS = ("chromium", "chromium-browser", "google-chrome")  # what --browser looks for
TIMEOUT_S = 600


class Posted:
    """What the page posted: its results, or the one line it failed with."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: dict[str, Any] = {}
        self.error: str | None = None


class CheckHandler(SimpleHTTPRequestHandler):
    """/bundle/... from the bundle, /inputs.json, the page and its packages from
    edgefreeze/javascript; POST /results and /error from the page."""

    bundle: Path
    inputs: Path
    posted: Posted

    def translate_path(self, path: str) -> str:
        route = path.split("?", 1)[0]
        if route == "/inputs.json":
            return str(self.inputs)
        if route.startswith("/bundle/"):
            return str(self.bundle / route.removeprefix("/bundle/"))
        return super().translate_path(path)

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
        if self.path == "/results":
            self.posted.body = body
        else:
            self.posted.error = str(body.get("message", "the page failed"))
        self.send_response(204)
        self.end_headers()
        self.posted.done.set()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def main(bundle: str, form: str, inputs: str, outputs: str) -> None:
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        sys.exit(f"--browser: no Chromium on PATH ({', '.join(BROWSERS)})")
    posted = Posted()
    handler = type(
        "Handler",
        (CheckHandler,),
        {"bundle": Path(bundle).resolve(), "inputs": Path(inputs), "posted": posted},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(JAVASCRIPT)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = f"http://127.0.0.1:{server.server_address[1]}/check.html?bundle=/bundle&form={form}"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--remote-debugging-port=0",
        page,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        finished = posted.done.wait(TIMEOUT_S)
    finally:
        process.kill()
        process.wait()
        server.shutdown()
    if not finished:
        sys.exit(f"--browser: the page posted nothing within {TIMEOUT_S} s")
    if posted.error is not None:
        sys.exit(posted.error.splitlines()[0])
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
