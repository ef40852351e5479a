"""Conversion of official VATT checkpoints (TensorFlow tensor bundles, read without TensorFlow)."""

from .official import from_official
from .tensor_bundle import TensorBundle

__all__ = ["TensorBundle", "from_official"]
