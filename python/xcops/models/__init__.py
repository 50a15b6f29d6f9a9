"""Models built on the xcops ops and layers; ``MODELS`` maps ``xcops train --model`` names."""

from .base import XCModel
from .bow import BowXC
from .heads import init_bias_from_label_rates, masked_bce_with_logits
from .inceptionxml import InceptionXML
from .ngame import NGAME
from .syncxml import SyncXML

MODELS: dict[str, type[XCModel]] = {cls.name: cls for cls in (BowXC, SyncXML, NGAME)}


def get_model(name: str) -> type[XCModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name]


__all__ = [
    "BowXC",
    "InceptionXML",
    "MODELS",
    "NGAME",
    "SyncXML",
    "XCModel",
    "get_model",
    "init_bias_from_label_rates",
    "masked_bce_with_logits",
]
