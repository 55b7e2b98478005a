"""Type aliases shared across nn_xp."""
from __future__ import annotations

from typing import Any

#: Any array-API array (NumPy, CuPy, torch, array_api_strict, ...).
Array = Any
#: An array-API namespace, as returned by ``array_api_compat.array_namespace``.
Namespace = Any
