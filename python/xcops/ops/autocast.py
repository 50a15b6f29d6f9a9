"""Autocast for the xcops ops.

Under ``torch.autocast`` a query usually arrives in bf16/fp16 while the label matrix stays
float32. Casting the ``[L, d]`` label matrix down would copy all of it on every call, which is
exactly the traffic the fused ops avoid, so the small tensors are cast to the label matrix's
dtype instead. Outside autocast, mixed dtypes are an error, as for any torch op.
"""

from __future__ import annotations

from typing import Optional

import torch


def match_weight_dtype(weight: torch.Tensor, *tensors: Optional[torch.Tensor]) -> tuple:
    """``tensors`` cast to ``weight.dtype`` when autocast is on for its device."""
    device_type = weight.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return tuple(None if t is None else t.to(weight.dtype) for t in tensors)
    return tensors
