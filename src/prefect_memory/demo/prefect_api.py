"""A temporary local Prefect API for the demo: no server to install, nothing left running.

Prefect 3 needs an API for flow runs and saved blocks. Measured on the 2-core machine here
(``docs/demo.md``), the options start in about the same time, because all of them run
the same uvicorn subprocess:

- ``prefect_test_harness()``: 9-10 s, a fresh database every time;
- ephemeral mode (``PREFECT_SERVER_ALLOW_EPHEMERAL_MODE``, no ``PREFECT_API_URL``): 9-10 s
  with a new database, 5-7 s with one already migrated;
- this class: the same server, with its SQLite database kept in the demo's folder (so
  from the second run on the migrations are skipped), started **in the background**
  while the demo imports pandas and pyarrow and generates its data, its output kept in a
  log file instead of the console (a server stopped mid-flush logs tracebacks).

Example:
    >>> api = TemporaryPrefectAPI("/tmp/pm-demo-doc/prefect.db")
    >>> api.url is None
    True
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryPrefectAPI:
    """A Prefect server (API only) in a subprocess on a free loopback port.

    Args:
        database: SQLite file of the server (created and migrated on first use).
        log_path: Where the server's output goes (default: next to the database).
        timeout: Seconds to wait for the API to answer.
    """

    def __init__(
        self, database: str | Path, log_path: str | Path | None = None, timeout: float = 90.0
    ) -> None:
        self.database = Path(database).resolve()
        self.log_path = Path(log_path) if log_path else self.database.with_suffix(".log")
        self.timeout = timeout
        self.url: str | None = None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _command(self, port: int) -> list[str]:
        import prefect

        return [
            sys.executable, "-m", "uvicorn",
            "--app-dir", str(Path(prefect.__file__).parent.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip

    def _run(self) -> None:
        import httpx

        started = time.perf_counter()
        self.database.parent.mkdir(parents=True, exist_ok=True)
        dropped = ("PREFECT_API_URL", "PREFECT_API_KEY")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update(_SERVER_ENV)
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{self.database}"
        for _attempt in range(3):  # a port taken meanwhile: try another one
            port = _free_port()
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self._command(port), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )  # fmt: skip
            url = f"http://127.0.0.1:{port}/api"
            deadline = time.monotonic() + self.timeout
            with httpx.Client(timeout=2.0) as client:
                while time.monotonic() < deadline and self._process.poll() is None:
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{url}/health").status_code == 200:
                            self.url = url
                            self.startup_seconds = time.perf_counter() - started
                            return
                    time.sleep(0.1)
            if self._process.poll() is None:
                self.stop()
                raise TimeoutError(
                    f"the Prefect API did not answer within {self.timeout:.0f} s "
                    f"(server log: {self.log_path})"
                )
        raise RuntimeError(f"the Prefect API server exited at start (log: {self.log_path})")

    def start(self, *, background: bool = True) -> TemporaryPrefectAPI:
        """Start the server; in the background (then :meth:`wait` for it) or now."""

        def target() -> None:
            try:
                self._run()
            except BaseException as err:  # reported by wait()
                self._error = err

        if background:
            self._thread = threading.Thread(target=target, name="prefect-api", daemon=True)
            self._thread.start()
        else:
            self._run()
        return self

    def wait(self) -> str:
        """Wait until the API answers; return its URL (raises what the start raised)."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self.url is None:
            raise RuntimeError("the Prefect API was not started")
        return self.url

    @contextlib.contextmanager
    def active(self) -> Iterator[str]:
        """Point Prefect at this API inside the block (waits for it first)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        url = self.wait()
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain()

    def stop(self) -> None:
        """Stop the server (the database file stays for the next run)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.url = None

    def __enter__(self) -> TemporaryPrefectAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _drain() -> None:
    """Send the logs and events still queued by this process before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=10)
    with contextlib.suppress(Exception):
        EventsWorker.drain_all(timeout=10)


def wants_temporary(mode: str) -> bool:
    """Whether ``mode`` (``temporary``, ``current``, ``auto``) means starting our own API."""
    if mode not in ("temporary", "current", "auto"):
        raise ValueError(f"prefect_api must be 'temporary', 'current' or 'auto', got {mode!r}")
    return mode == "temporary" or (mode == "auto" and not os.environ.get("PREFECT_API_URL"))


@contextlib.contextmanager
def configured_api() -> Iterator[str]:
    """The Prefect API configured in this process (``PREFECT_API_URL``)."""
    from prefect.settings import PREFECT_API_URL

    current = PREFECT_API_URL.value()
    if not current:
        raise RuntimeError("prefect_api='current' but PREFECT_API_URL is not set")
    yield current
