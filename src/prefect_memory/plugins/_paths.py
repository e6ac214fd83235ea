"""Moved to :mod:`prefect_memory.plugins.local_paths`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.plugins._paths``) keep working.
"""

import sys

from . import local_paths as _moved

sys.modules[__name__] = _moved
