"""Value checks shared by the models' ``model_args`` rules (bool is never taken for a number)."""

from __future__ import annotations

import math


def is_integer(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
