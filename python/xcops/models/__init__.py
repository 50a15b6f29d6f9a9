"""Models and heads built on the xcops ops; ``MODELS`` maps ``xcops train --model`` names."""

from .base import XCModel
from .bow import BowXC
from .heads import ShortlistClassifier, masked_bce_with_logits

MODELS: dict[str, type[XCModel]] = {cls.name: cls for cls in (BowXC,)}


def get_model(name: str) -> type[XCModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name]


__all__ = ["BowXC", "MODELS", "ShortlistClassifier", "XCModel", "get_model", "masked_bce_with_logits"]
