"""The built wheel works on its own: docs/install.md's commands, run as written, in fresh venvs.

The commands run in a copy of the clone's working tree, in a fresh virtual environment (made
with ``python -m venv``, no site packages) that is "activated" (its ``bin`` first on PATH).
pip gets the dev constraints (``PIP_CONSTRAINT``), so it installs the versions the suite runs
with (Prefect's client then matches the test server) and finds them in its cache.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from prefect_memory.blocks import BLOCKS

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
INSTALL_PAGE = ROOT / "docs" / "install.md"
CONSTRAINTS = ROOT / "constraints-dev.txt"
VERSION = "0.1.0"

# A block, memory tasks and result storage, run with the fresh venv's python.
FLOW = """
import json
import sys

from prefect import flow, task
from prefect.cache_policies import INPUTS

import prefect_memory as pm
from prefect_memory.tasks import memory_get, memory_set

redis_url, name, folder = sys.argv[1:4]
pm.SqliteMemory(path=f"{folder}/memory.db", namespace=name).save(name, overwrite=True)
pm.RedisMemory(url=redis_url, namespace="results", key_prefix=name).save(name, overwrite=True)
results = pm.RedisMemory.load(name)
calls = []


@task(cache_policy=INPUTS, result_storage=results)
def double(x: int) -> int:
    calls.append(x)
    return 2 * x


@flow
def pipeline(x: int) -> dict:
    memory = f"{pm.SqliteMemory.get_block_type_slug()}/{name}"
    memory_set(memory, "last", x)
    state = double(x, return_state=True)
    return {"last": memory_get(memory, "last"), "double": state.result(), "state": state.name}


first, second = pipeline(21), pipeline(21)
print(json.dumps({"first": first, "second": second, "calls": calls, "module": pm.__file__}))
"""


def install_commands() -> dict[str, list[str]]:
    """docs/install.md's bash blocks, by the title of the section (## or ###) they are in."""
    sections: dict[str, list[str]] = {}
    title = ""
    pattern = re.compile(r"^#{2,3} ([^\n]+)$|^```bash\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    for match in pattern.finditer(INSTALL_PAGE.read_text()):
        if match.group(1):
            title = match.group(1).strip()
        else:
            sections.setdefault(title, []).append(match.group(2))
    return sections


def copy_clone(dest: Path) -> Path:
    """The clone's files as they are in the working tree (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@dataclass
class Venv:
    """A fresh virtual environment, used as if activated."""

    path: Path
    home: Path

    @classmethod
    def create(cls, path: Path) -> Venv:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
        home = path.parent / f"{path.name}-prefect-home"
        home.mkdir()
        return cls(path, home)

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "PYTHON", "VIRTUAL_ENV", "PIP_CONSTRAINT"))
        }
        return {
            **keep,
            "PATH": f"{self.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(self.path),
            "PIP_CONSTRAINT": str(CONSTRAINTS),
            "PREFECT_HOME": str(self.home),
            "DO_NOT_TRACK": "1",
            **extra,
        }

    def bash(self, commands: str, cwd: Path, **env: str) -> str:
        """Run ``commands`` as pasted into bash (errors stop it); return the output."""
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands],
            cwd=cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"$ {commands}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, code: str, cwd: Path, *args: str, **env: str) -> Any:
        """Run ``code`` with this venv's python; the last output line is JSON."""
        script = cwd / "probe.py"
        script.write_text(code)
        out = self.bash(shlex.join([self.python, str(script), *args]), cwd, **env)
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Venv, Path]:
    """A fresh venv where "From a built wheel" ran as written, and the clone copy it ran in."""
    base = tmp_path_factory.mktemp("wheel")
    clone = copy_clone(base / "clone")
    venv = Venv.create(base / "venv")
    probe = "import json, sys; print(json.dumps({'prefix': sys.prefix, 'path': sys.path}))"
    fresh = venv.json(probe, base)
    assert fresh["prefix"] == str(venv.path)
    assert not any(str(ROOT) in entry for entry in fresh["path"]), fresh["path"]
    for commands in install_commands()["From a built wheel"]:
        venv.bash(commands, clone)
    return venv, clone


def test_build_writes_a_wheel_and_an_sdist_with_the_promised_files(
    built: tuple[Venv, Path],
) -> None:
    _, clone = built
    dist = clone / "dist"
    wheel = dist / f"prefect_memory-{VERSION}-py3-none-any.whl"
    sdist = dist / f"prefect_memory-{VERSION}.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, sdist.name])

    package = clone / "src" / "prefect_memory"
    sources = {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()}
    sources = {s for s in sources if "__pycache__" not in s}
    assert "py.typed" in sources

    top = f"prefect_memory-{VERSION}"
    with tarfile.open(sdist) as archive:
        members = {m.name for m in archive.getmembers() if m.isfile()}
    expected = {f"{top}/src/prefect_memory/{s}" for s in sources} | {
        f"{top}/{name}"
        for name in ("PKG-INFO", "LICENSE", "README.md", "pyproject.toml", ".gitignore")
    }
    assert members == expected, (members - expected, expected - members)

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"{top}.dist-info/entry_points.txt").decode()
        metadata = archive.read(f"{top}.dist-info/METADATA").decode()
    info = f"{top}.dist-info"
    assert {f"prefect_memory/{s}" for s in sources} | {
        f"{info}/{n}"
        for n in ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE")
    } == names
    assert "[prefect.collections]\nprefect_memory = prefect_memory.blocks" in entry_points
    assert "prefect-memory = prefect_memory.cli:app" in entry_points
    assert "License-Expression: Apache-2.0" in metadata
    assert re.search(r"^Requires-Dist: prefect>=", metadata, re.MULTILINE)
    assert "Apache License" in (clone / "LICENSE").read_text()


def test_the_installed_wheel_runs_a_block_task_and_result_storage_flow(
    built: tuple[Venv, Path], redis_server: Any, prefect_api: Any
) -> None:
    venv, clone = built
    unique = uuid.uuid4().hex[:8]
    folder = clone.parent / "flow-data"
    result = venv.json(
        FLOW, clone.parent, redis_server.url, f"pk{unique}", str(folder),
        PREFECT_API_URL=prefect_api.api_url,
    )  # fmt: skip
    assert Path(result["module"]).is_relative_to(venv.path), result["module"]
    assert result["first"] == {"last": 21, "double": 42, "state": "Completed"}
    assert result["second"] == {"last": 21, "double": 42, "state": "Cached"}
    assert result["calls"] == [21]  # the second run read the result back from Redis
    assert (folder / "memory.db").exists()
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys(f"pk{unique}:*"), "no stored result in Redis"
    finally:
        client.close()


def test_register_command_from_the_wheel(built: tuple[Venv, Path], prefect_api: Any) -> None:
    venv, clone = built
    (commands,) = install_commands()["Register the blocks"]
    out = venv.bash(commands, clone, PREFECT_API_URL=prefect_api.api_url, COLUMNS="200")
    assert f"Successfully registered {len(BLOCKS)} blocks" in out, out
    assert {cls.get_block_type_slug() for cls in BLOCKS} <= set(prefect_api.block_types())


def test_editable_install_from_a_clone_and_the_hiredis_extra(built: tuple[Venv, Path]) -> None:
    # In the wheel's venv (its dependencies are there already, which keeps this quick); the
    # wheel is put back afterwards, so the order of the tests does not matter.
    venv, clone = built
    sections = install_commands()
    try:
        for commands in sections["From a clone"] + sections["hiredis"]:
            venv.bash(commands, clone)
        seen = venv.json(
            "import json, redis.utils, prefect_memory as pm\n"
            "print(json.dumps({'module': pm.__file__, 'hiredis': redis.utils.HIREDIS_AVAILABLE}))",
            clone.parent,
        )
        assert seen == {
            "module": str(clone / "src" / "prefect_memory" / "__init__.py"),
            "hiredis": True,
        }
    finally:
        wheel = next((clone / "dist").glob("*.whl"))
        restore = f"pip uninstall -y -q hiredis; pip install -q --no-deps --force-reinstall {wheel}"
        venv.bash(restore, clone)


def test_every_command_of_the_install_page_is_run_here() -> None:
    run_here = {"From a clone", "From a built wheel", "hiredis", "Register the blocks"}
    assert set(install_commands()) == run_here
