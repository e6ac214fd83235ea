"""Moved to :mod:`prefect_memory.blocks.result_payloads`; this former path is the same module.

Kept so that imports and pickles made before the move (which name
``prefect_memory.blocks.payloads``) keep working.
"""

import sys

from . import result_payloads as _moved

sys.modules[__name__] = _moved
