"""``python -m prefect_memory.demo`` (see :mod:`prefect_memory.demo.command`)."""

from __future__ import annotations

import sys

from .command import main

sys.exit(main())
