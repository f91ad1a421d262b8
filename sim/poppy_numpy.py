"""POPPY on NumPy: the one door through which the project imports POPPY.

POPPY switches to CuPy whenever CuPy imports (its `accel_math`), and its CuPy arrays
do not mix with the NumPy and torch code here; numexpr is not on every machine either.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np
import scipy

__all__ = ["import_poppy"]


def import_poppy() -> ModuleType:
    """POPPY, imported with its accelerators off: NumPy (and SciPy) in every submodule.

    POPPY's submodules bind `xp` and `_scipy` from `accel_math` when they are imported,
    so `conf.use_cupy = False` alone would leave CuPy in place; those globals are reset.
    """
    import poppy
    from poppy import accel_math

    poppy.conf.use_cupy = False
    poppy.conf.use_numexpr = False
    accel_math.update_math_settings()
    for name, module in list(sys.modules.items()):
        if name == "poppy" or name.startswith("poppy."):
            if hasattr(module, "xp"):
                module.xp = np
            if hasattr(module, "_scipy"):
                module._scipy = scipy
    return poppy
