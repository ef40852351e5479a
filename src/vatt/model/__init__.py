"""The VATT model: layers, tokenizers, backbones, heads and the full model (see vatt.model.vatt)."""

from .vatt import VATT, create_model, load_model

__all__ = ["VATT", "create_model", "load_model"]
