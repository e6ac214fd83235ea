"""Moved to :mod:`prefect_memory.lazy_view`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.lazy``) keep working.
"""

import sys

from . import lazy_view as _moved

sys.modules[__name__] = _moved
