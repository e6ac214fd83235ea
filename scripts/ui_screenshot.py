"""Screenshot the Prefect UI's block catalog, with the memory blocks, in headless Chromium.

Usage (from the repository root)::

    .venv/bin/python scripts/ui_screenshot.py --out docs/img/block-catalog.png

It starts ``prefect server start`` on a free loopback port with a throwaway ``PREFECT_HOME``
(the server registers the memory blocks through the ``prefect.collections`` entry point),
waits for ``/api/health``, and runs Debian's ``chromium`` headless (installed by
``scripts/install-servers.sh chromium`` when missing). ``tests/prefect/test_ui.py`` uses the
same functions.

Two things found on the way: the UI asks ``/ui-settings`` where the API is, which defaults to
``http://127.0.0.1:4200/api`` whatever the port, so ``PREFECT_UI_API_URL`` must be set for
another port; and the catalog lists every block type (63 here) three per row, so the window
is made tall enough to show them all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "scripts" / "install-servers.sh"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
)  # fmt: skip
CATALOG_WIDTH = 1440


def find_chromium() -> str | None:
    """The path of a Chromium binary, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def ensure_chromium() -> str:
    """Return Chromium's path, installing it with ``install-servers.sh chromium`` if missing.

    Raises:
        RuntimeError: It is still missing (with the installer's output).
    """
    found = find_chromium()
    if found:
        return found
    done = subprocess.run(
        ["bash", str(INSTALLER), "chromium"],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    found = find_chromium()
    if found is None:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise RuntimeError(
            f"{INSTALLER.name} chromium exited with {done.returncode} and no chromium is on "
            f"PATH (it needs apt-get and root or sudo):\n{tail}"
        )
    return found


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrefectServer:
    """``prefect server start`` on a free loopback port, with its own ``PREFECT_HOME``."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = self.url + "/api"
        self.log_path = self.home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """Environment for the server and for clients of this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            DO_NOT_TRACK="1",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_UI_API_URL=self.api_url,
        )
        return env

    def start(self, timeout: float = 120.0) -> PrefectServer:
        """Start the server and wait until ``/api/health`` answers.

        Raises:
            RuntimeError: It exited or did not get healthy in time (with its log tail).
        """
        self.home.mkdir(parents=True, exist_ok=True)
        prefect = Path(sys.executable).with_name("prefect")
        command = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.process.returncode}:\n"
                                   + self.log_tail())  # fmt: skip
            try:
                if self.get("/health") is True:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> Any:
        """GET ``/api<path>`` and decode the JSON answer."""
        with urllib.request.urlopen(self.api_url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def post(self, path: str, body: Any) -> Any:
        """POST JSON to ``/api<path>`` and decode the JSON answer."""
        request = urllib.request.Request(
            self.api_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL if it lingers)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chromium(
    chromium_path: str,
    url: str,
    *,
    screenshot: Path | None = None,
    window: tuple[int, int] = (CATALOG_WIDTH, 1000),
    timeout: float = 120.0,
    virtual_time_ms: int = 10_000,
) -> str:
    """Render ``url`` headless: save a PNG to ``screenshot``, else return the rendered DOM
    (``virtual_time_ms``: how far the page's timers may run before, Chromium's
    ``--virtual-time-budget``)."""
    with tempfile.TemporaryDirectory(prefix="pm-chromium-") as profile:
        command = [chromium_path, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--window-size={window[0]},{window[1]}",
                   f"--virtual-time-budget={int(virtual_time_ms)}"]  # fmt: skip
        command.append(f"--screenshot={screenshot}" if screenshot else "--dump-dom")
        done = subprocess.run(
            [*command, url], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    if done.returncode != 0 or (screenshot is not None and not screenshot.exists()):
        raise RuntimeError(f"chromium exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def catalog_window(block_types: int) -> tuple[int, int]:
    """A window that shows every card of the catalog (three per row at this width)."""
    return CATALOG_WIDTH, 240 + math.ceil(block_types / 3) * 290


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG image.

    Raises:
        ValueError: ``data`` is not a PNG.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    """Start a server, screenshot its block catalog to ``--out``; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "block-catalog.png")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    browser = ensure_chromium()
    with (
        tempfile.TemporaryDirectory(prefix="pm-prefect-ui-") as home,
        PrefectServer(Path(home), args.port) as server,
    ):
        types = server.post("/block_types/filter", {})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        window = catalog_window(len(types))
        chromium(browser, server.url + "/blocks/catalog", screenshot=args.out, window=window)
    width, height = png_size(args.out.read_bytes())
    size = args.out.stat().st_size
    print(f"{args.out}: {width}x{height}, {size} bytes, {len(types)} block types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
