"""Moved to :mod:`prefect_memory.aio`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory._twins``) keep working.
"""

import sys

from . import aio as _moved

sys.modules[__name__] = _moved
