"""Moved to :mod:`prefect_memory.hybrid.backend`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.resilience.hybrid``) keep working.
"""

import sys

from ..hybrid import backend as _moved

sys.modules[__name__] = _moved
