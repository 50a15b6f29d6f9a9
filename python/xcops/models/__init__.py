"""Models and heads built on the xcops ops."""

from .heads import ShortlistClassifier, masked_bce_with_logits

__all__ = ["ShortlistClassifier", "masked_bce_with_logits"]
