"""Moved to :mod:`prefect_memory.blocks.composite_parts`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.blocks.parts``) keep working.
"""

import sys

from . import composite_parts as _moved

sys.modules[__name__] = _moved
