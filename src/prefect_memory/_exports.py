"""Moved to :mod:`prefect_memory.lazy_exports`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory._exports``) keep working.
"""

import sys

from . import lazy_exports as _moved

sys.modules[__name__] = _moved
