"""Memory tasks on Prefect's Dask task runner, with worker processes (prefect-dask).

A task's arguments cross to another process there: defaults included. ``memory_set``'s
"ttl not given" default used to be ``object()``, which arrived as another object and was
refused (``InvalidTTLError: ttl must be seconds ..., got object``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from prefect import flow, unmapped
from prefect_dask import DaskTaskRunner

from prefect_memory.blocks import SqliteMemory
from prefect_memory.memory import _UNSET
from prefect_memory.tasks import memory_get, memory_set


def test_the_unset_default_survives_pickling() -> None:
    assert pickle.loads(pickle.dumps(_UNSET)) is _UNSET
    assert repr(_UNSET) == "<unset>"  # stable: the same input hash in every process


@pytest.mark.timeout(300)
def test_memory_tasks_fan_out_on_dask_worker_processes(tmp_path: Path) -> None:
    block = SqliteMemory(path=str(tmp_path / "memory.db"), namespace="dask", ttl=3600)
    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True}
    )

    @flow(task_runner=runner)
    def fan_out() -> list[int]:
        written = memory_set.map(unmapped(block), [f"k{i}" for i in range(4)], list(range(4)))
        read = memory_get.map(unmapped(block), [f"k{i}" for i in range(4)], wait_for=[written])
        return read.result()

    assert fan_out() == [0, 1, 2, 3]
    info = block.memory.info("k0")
    assert info is not None and info.expires_at is not None  # the block's ttl applied
