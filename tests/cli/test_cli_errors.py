"""Every failure of ``prefect-memory`` ends in one clear line and a non-zero exit code.

Each test runs the installed console script in a subprocess (see ``conftest.py``) and
checks the exit code (2: the input must change, 1: it failed, 130: interrupted), that
stderr ends with exactly one ``error: ...`` line naming the problem, and that no
traceback is printed. Missing packages are simulated by modules that fail to import
like an uninstalled package; "API down" is a ``PREFECT_API_URL`` on a closed port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import prefect_memory as pm
from prefect_memory import errors
from prefect_memory.cli.failures import describe, one_line

SCRIPT = Path(sys.executable).with_name("prefect-memory")
RunCli = Callable[..., subprocess.CompletedProcess[str]]


def assert_one_error(
    done: subprocess.CompletedProcess[str], code: int, *words: str, alone: bool = True
) -> str:
    """The error line of ``done``, once it ended as promised; ``alone``: nothing else on stderr."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), output
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], output
    if alone:
        assert len(lines) == 1, output
    for word in words:
        assert word in lines[-1], output
    return lines[-1]


def write_config(folder: Path, config: dict[str, Any], name: str = "memory.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(config))
    return path


MAINTENANCE = {
    "memory": {"backend": "memory"},
    "maintenance": {
        "block": "tiered-memory/nope",
        "schedules": {"migrate_tiers": {"interval": 900}},
    },
}


# -- what the issue names -------------------------------------------------------------------
def test_a_block_name_without_prefect_installed(run_cli: RunCli) -> None:
    done = run_cli("info", "redis-memory/sessions", missing=("prefect",))
    assert_one_error(done, 2, "needs Prefect", "pip install prefect", "redis-memory/sessions")


def test_a_block_name_with_the_prefect_api_down(run_cli: RunCli, closed_port: int) -> None:
    api = f"http://127.0.0.1:{closed_port}/api"
    done = run_cli("info", "redis-memory/sessions", env={"PREFECT_API_URL": api})
    assert_one_error(done, 1, f"Prefect API at {api} is unreachable")


def test_s3_without_s3fs(run_cli: RunCli) -> None:
    done = run_cli("info", "s3://bucket/memory", missing=("s3fs",))
    line = assert_one_error(
        done, 2, "s3://bucket/memory", "pip install 'prefect-memory[s3]'", alone=False
    )
    assert "MissingDependencyError" in done.stdout  # the store's row of the table says why
    assert line.count("error:") == 1


def test_install_hints_print_in_full(run_cli: RunCli) -> None:
    done = run_cli("info", "redis://127.0.0.1:6379/0", missing=("redis",))
    assert_one_error(done, 2, "pip install 'prefect-memory[redis]'")
    done = run_cli("info", "mongodb://127.0.0.1:27017/db", missing=("pymongo",))
    assert_one_error(done, 2, "pip install 'prefect-memory[mongodb]'")


def test_a_bad_redis_database_number(run_cli: RunCli, redis_server: Any) -> None:
    base = f"redis://127.0.0.1:{redis_server.port}"
    assert_one_error(run_cli("info", f"{base}/abc"), 2, "must be a number", "'abc'")
    out_of_range = run_cli("info", f"{base}/999")
    # a database the server lacks is the URL's fault: a ConfigError, exit code 2
    assert_one_error(out_of_range, 2, f"{base}/999", "has no database 999", alone=False)


def test_plot_of_a_missing_series(run_cli: RunCli, redis_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "cpu.png"
    prefix = "noplot" + uuid.uuid4().hex[:6]
    done = run_cli("plot", redis_server.url, "nosuch", str(out), "--key-prefix", prefix)
    assert_one_error(done, 1, "no time series 'nosuch'")
    assert not out.exists()


def test_plot_of_an_unreachable_redis(run_cli: RunCli, closed_port: int, tmp_path: Path) -> None:
    done = run_cli("plot", f"redis://127.0.0.1:{closed_port}/0", "cpu", str(tmp_path / "x.png"))
    assert_one_error(done, 1, "unreachable")


def test_serve_with_the_api_down(run_cli: RunCli, closed_port: int, tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{closed_port}/api"
    config = write_config(tmp_path, MAINTENANCE)
    done = run_cli("serve", str(config), env={"PREFECT_API_URL": api})
    assert_one_error(done, 1, f"Prefect API at {api} is unreachable")
    assert "migrate_tiers-nope" in done.stdout  # the plan was shown first


def test_serve_and_info_of_a_block_that_does_not_exist(
    run_cli: RunCli, prefect_api: Any, tmp_path: Path
) -> None:
    env = {"PREFECT_API_URL": prefect_api.api_url}
    config = write_config(tmp_path, MAINTENANCE)
    done = run_cli("serve", str(config), env=env)
    assert_one_error(done, 1, "no block 'tiered-memory/nope'", prefect_api.api_url)
    done = run_cli("info", "redis-memory/no-such-block", env=env)
    assert_one_error(done, 1, "no block 'redis-memory/no-such-block'")


def test_info_on_a_path_that_does_not_exist_creates_nothing(
    run_cli: RunCli, tmp_path: Path
) -> None:
    absolute = tmp_path / "missing" / "memory.db"
    done = run_cli("info", f"sqlite:///{absolute}")
    assert_one_error(done, 1, f"{absolute} does not exist")
    for url in ("sqlite:///data/m.db", "json:///data/m.json", "parquet:///data/archive"):
        assert_one_error(run_cli("info", url, cwd=tmp_path), 1, "does not exist")
    assert_one_error(run_cli("info", f"file://{tmp_path}/nothing"), 1, "does not exist")
    assert_one_error(run_cli("info", "data/m.db", cwd=tmp_path), 2, "data/m.db: no such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no empty database


def test_info_on_a_store_that_exists_still_works(run_cli: RunCli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/there.db"
    pm.open_memory(url).set("k", 1)
    done = run_cli("info", url)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stdout + done.stderr
    assert "there.db" in done.stdout


# -- more failure modes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("info", "redis://[::1/0"), 2, ("redis://[::1/0 is not a valid URL",)),
        (("info", "nosuch://x"), 2, ("no memory backend for the URL scheme 'nosuch'",)),
        (("info", "not-a-target"), 2, ("neither a URL, a config file nor a saved block",)),
        (("info",), 2, ("Missing argument", "prefect-memory info --help")),
        (("--bogus",), 2, ("No such option: --bogus",)),
        (("nosuchcommand",), 2, ("No such command",)),
        (("info", "memory://", "--bogus"), 2, ("No such option: --bogus",)),
        (("blocks", "create", "/nonexistent/memory.json"), 2, ("config file not found",)),
        (("serve", "/nonexistent/memory.json"), 2, ("config file not found",)),
        (("blocks", "create", "m.json", "-c", "redis"), 2, ("--connection takes KIND=URL",)),
    ],
)
def test_bad_input_is_one_line(
    run_cli: RunCli, args: tuple[str, ...], code: int, words: tuple[str, ...]
) -> None:
    assert_one_error(run_cli(*args), code, *words)


def test_bad_config_files(run_cli: RunCli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for command in (("info",), ("blocks", "create"), ("serve",)):
        assert_one_error(run_cli(*command, str(broken)), 2, "broken.json", "not valid JSON")
    bad = write_config(tmp_path, {"memory": {"backend": "hybird"}}, "bad.json")
    assert_one_error(run_cli("blocks", "create", str(bad)), 2, "unknown backend 'hybird'")
    schedules = write_config(tmp_path, {"maintenance": {"schedules": {"nope": {"interval": 5}}}})
    assert_one_error(run_cli("serve", str(schedules), "--list"), 2, "nope: unknown flow")
    assert_one_error(run_cli("info", str(tmp_path)), 2, "is a folder")


def test_a_file_in_the_way_is_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    in_the_way = tmp_path / "file"
    in_the_way.write_text("")
    done = run_cli("info", f"sqlite:///{in_the_way}/m.db")
    assert_one_error(done, 1, "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_config_file(run_cli: RunCli, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"memory": {"backend": "memory"}})
    config.chmod(0)
    assert_one_error(run_cli("info", str(config)), 2, "memory.json")


def test_an_unreachable_store_hides_its_password(run_cli: RunCli, closed_port: int) -> None:
    secret = "Zq8/Xv7?Kw5#Jm3"
    done = run_cli("info", f"redis://:{secret}@127.0.0.1:{closed_port}/0")
    assert_one_error(done, 1, "unreachable", f"redis://:***@127.0.0.1:{closed_port}/0", alone=False)
    for part in ("Zq8", "Xv7", "Kw5", "Jm3"):
        assert part not in done.stdout + done.stderr


def test_blocks_commands_with_the_api_down(
    run_cli: RunCli, closed_port: int, tmp_path: Path
) -> None:
    api = f"http://127.0.0.1:{closed_port}/api"
    config = write_config(tmp_path, {"memory": {"backend": "memory"}})
    for args in (("blocks", "register"), ("blocks", "create", str(config))):
        done = run_cli(*args, env={"PREFECT_API_URL": api})
        assert_one_error(done, 1, f"Prefect API at {api} is unreachable")


def test_python_dash_m_runs_the_same_command(run_cli: RunCli) -> None:
    done = run_cli("info", "nosuch://x", python_module=True)
    assert_one_error(done, 2, "no memory backend for the URL scheme 'nosuch'")


def test_ctrl_c_ends_in_one_line(tmp_path: Path) -> None:
    """SIGINT while ``info`` waits for a store that accepted the connection but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(COLUMNS="200", NO_COLOR="1")
        process = subprocess.Popen(
            [str(SCRIPT), "info", f"redis://127.0.0.1:{port}/0?timeout=600"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            connection, _ = silent.accept()  # the command is now waiting for an answer
            with connection:
                process.send_signal(signal.SIGINT)
                stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_error(done, 130, "interrupted")


def test_the_help_still_prints_and_succeeds(run_cli: RunCli) -> None:
    done = run_cli("--help")
    assert done.returncode == 0 and "info" in done.stdout and done.stderr.strip() == ""


# -- the mapping itself ---------------------------------------------------------------------
def _instances() -> list[BaseException]:
    failure = errors.ValidationFailure("email", "format", "'x' is not an email")
    made: list[BaseException] = [errors.ValidationError([failure, failure], key="user:1")]
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls is errors.ValidationError or not isinstance(cls, type):
            continue
        if issubclass(cls, Exception):
            made.append(cls("first line\nsecond line"))
    return made


@pytest.mark.parametrize("err", _instances(), ids=lambda e: type(e).__name__)
def test_every_error_of_the_tree_has_a_line_and_a_code(err: BaseException) -> None:
    line, code = describe(err)
    assert "\n" not in line and line
    usage = (errors.ConfigError, errors.ValidationError, errors.InvalidKeyError,
             errors.MissingDependencyError)  # fmt: skip
    assert code == (2 if isinstance(err, usage) else 1)


def test_one_line_keeps_every_part() -> None:
    assert one_line("a (2 failures):\n  x: bad\n  y: bad") == "a (2 failures): x: bad; y: bad"
