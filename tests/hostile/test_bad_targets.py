"""Bad targets end in our errors, with what to change and no secret: found by the CLI's
one-line error paths (issue 17), fixed where they are raised.

Each test runs against the real thing it names: the suite's ``redis-server`` for database
numbers, a subprocess without ``s3fs`` for the missing driver.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import prefect_memory as pm
from prefect_memory.errors import ConfigError, EntryNotFound, MissingDependencyError
from prefect_memory.urls import redact_url


def test_a_negative_redis_database_is_refused_when_the_url_is_read() -> None:
    with pytest.raises(ConfigError, match="must be 0 or more, got -1"):
        pm.open_memory("redis://127.0.0.1:1/-1")


def test_a_database_the_server_does_not_have_is_a_config_error(redis_server) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/999"
    mem = pm.open_memory(url)
    with pytest.raises(ConfigError, match="has no database 999") as caught:
        mem.set("k", 1)
    assert "databases" in str(caught.value)


def test_a_malformed_url_is_a_config_error_without_its_password() -> None:
    with pytest.raises(ConfigError, match="not a valid URL") as caught:
        pm.open_memory("redis://bob:s3cr3t-pw@[::1/0")
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in redact_url("redis://bob:s3cr3t-pw@[::1/0")


def test_s3_without_s3fs_is_a_missing_dependency_with_the_install_line() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["s3fs"] = None  # as if it were not installed
        import prefect_memory as pm
        from prefect_memory.errors import MissingDependencyError
        try:
            pm.open_memory("s3://bucket/prefix").set("k", 1)
        except MissingDependencyError as err:
            print("MISSING", err)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MISSING"), out.stdout + out.stderr
    assert "pip install 'prefect-memory[s3]'" in out.stdout
    assert issubclass(MissingDependencyError, ImportError)


def test_opening_a_missing_time_series_is_entry_not_found(redis_server) -> None:
    from prefect_memory.analytics import RedisLink, TimeSeries

    link = RedisLink.open(redis_server.url, namespace="bad-targets")
    with pytest.raises(EntryNotFound, match="no time series 'nosuch'"):
        TimeSeries.open(link, "nosuch")
    with pytest.raises(KeyError):  # still a KeyError for code written against the old one
        TimeSeries.open(link, "nosuch")
