"""mem.lazy(): values load on first access and stay local."""

from __future__ import annotations

from typing import Any

import pytest

import prefect_memory as pm


def test_lazy_view_loads_once_and_writes_through(redis_server: Any) -> None:
    mem = pm.open_memory(redis_server.url, namespace="lazy", key_prefix="lazytest")
    mem.clear()
    mem.set_many({"a": 1, "b": 2, "c": 3})
    view = mem.lazy()
    assert view["a"] == 1
    mem.set("a", 100)  # changed behind the view's back
    assert view["a"] == 1  # the local copy is kept ...
    view.forget("a")
    assert view["a"] == 100  # ... until forgotten
    assert mem.info("a").access_count == 2  # two loads, not one per access
    assert view.prefetch(["b", "c", "zz"]) == 2
    assert view.loaded == ["a", "b", "c", "zz"]
    assert "zz" not in view
    with pytest.raises(KeyError):
        view["zz"]
    view["d"] = 4
    assert mem.get("d") == 4
    del view["d"]
    assert not mem.exists("d") and "d" not in view
    assert sorted(view) == ["a", "b", "c"] and len(view) == 3
    mem.clear()
