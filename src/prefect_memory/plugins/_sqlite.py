"""Moved to :mod:`prefect_memory.plugins.sqlite_wal`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.plugins._sqlite``) keep working.
"""

import sys

from . import sqlite_wal as _moved

sys.modules[__name__] = _moved
