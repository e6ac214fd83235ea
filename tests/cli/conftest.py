"""Run the real ``prefect-memory`` console script in a subprocess, as a user does.

``run_cli(*args, missing=("s3fs",), env={...})`` runs ``.venv/bin/prefect-memory`` with a
clean Prefect environment (own ``PREFECT_HOME``, no ``PREFECT_API_URL`` unless given) and
returns the finished process. ``missing`` names packages the process must not find: a
folder put first on ``PYTHONPATH`` holds, for each, a module that raises the same
``ModuleNotFoundError`` an uninstalled package raises, so the command's own import code
path is the one under test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(sys.executable).with_name("prefect-memory")
RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _blocker(folder: Path, package: str) -> None:
    """A module ``package`` in ``folder`` that fails to import like a missing package."""
    code = f"raise ModuleNotFoundError(\"No module named '{package}'\", name='{package}')\n"
    (folder / package).mkdir(parents=True, exist_ok=True)
    (folder / package / "__init__.py").write_text(code)


@pytest.fixture
def run_cli(tmp_path_factory: pytest.TempPathFactory) -> RunCli:
    """``run_cli(*args, missing=(), env=None, cwd=None)``: the command's finished process."""
    home = tmp_path_factory.mktemp("prefect-home")

    def run(
        *args: str,
        missing: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        python_module: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        environ.update(
            COLUMNS="200",
            NO_COLOR="1",
            DO_NOT_TRACK="1",
            PREFECT_HOME=str(home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        environ.pop("PYTHONPATH", None)
        if missing:
            blockers = tmp_path_factory.mktemp("missing")
            for package in missing:
                _blocker(blockers, package)
            environ["PYTHONPATH"] = str(blockers)
        environ.update(env or {})
        command = [sys.executable, "-m", "prefect_memory.cli"] if python_module else [str(SCRIPT)]
        return subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            env=environ,
            cwd=cwd,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def prefect_api(prefect_server: Any) -> Any:
    """The session's real ``prefect server`` (see ``tests/conftest.py``): ``.api_url``."""
    return prefect_server
