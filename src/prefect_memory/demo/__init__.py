"""The demo behind ``make demo``: the tutorial's ML pipeline on a tiered memory, as a Prefect flow.

- :mod:`.pipeline`: the flow ``ml_pipeline`` and its tasks (features, models, cached
  predictions, events, migration, archival);
- :mod:`.stores`: its config (:class:`DemoConfig`, embedded or services profile) and stores;
- :mod:`.command`: ``python -m prefect_memory.demo`` (a temporary Prefect API, the
  servers of ``--profile services``, progress bars, the summary).

See ``docs/demo.md``. Importing this package is cheap: Prefect, pandas and pyarrow load
with :mod:`.pipeline`.
"""

from __future__ import annotations

from .command import main, run_demo

__all__ = ["main", "run_demo"]
