"""VATT in PyTorch: Video-Audio-Text Transformers for self-supervised multimodal learning."""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, InputError, VattError  # noqa: F401
from .text import WordTokenizer  # noqa: F401

# The model API (create_model, load_model, configs) is re-exported once vatt.model exists.
try:  # pragma: no cover - import guard only while the package is being assembled
    from .model import create_model, load_model  # noqa: F401
    from .config import ModelConfig, list_presets  # noqa: F401
except ImportError as _e:  # noqa: F841
    pass
