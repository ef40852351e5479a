"""VATT in PyTorch: Video-Audio-Text Transformers for self-supervised multimodal learning."""

__version__ = "0.1.0"

from .config import ModelConfig, list_presets  # noqa: F401
from .errors import CheckpointError, ConfigError, DataError, InputError, VattError  # noqa: F401
from .model import VATT, create_model, load_model  # noqa: F401
from .text import WordTokenizer  # noqa: F401
