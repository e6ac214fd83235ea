"""Moved to :mod:`prefect_memory.shared.cached`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.shared.memory``) keep working.
"""

import sys

from . import cached as _moved

sys.modules[__name__] = _moved
