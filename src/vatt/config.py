"""Model configuration: dataclasses, named presets, JSON/YAML files and dotted overrides.

Presets (``list_presets()``)::

    tiny       CPU demo/tests: 8x64x64 video (patch 2x16x16 -> 64 tokens), 0.8 s audio at 16 kHz
               (100 tokens), width-128 two-layer towers
    bbs        video Base   + audio Base + text Small   (paper geometry)
    mbs        video Medium + audio Base + text Small   (default; paper geometry)
    lbs        video Large  + audio Base + text Small
    ma-medium  one shared Medium encoder for all three modalities

Overrides use dotted keys, e.g. ``create_model("tiny", **{"video.drop_rate": 0.25})`` or a nested
dict ``video={"drop_rate": 0.25}``; an encoder may be given by size name
(``video_encoder="large"``). Unknown presets and keys raise :class:`vatt.errors.ConfigError`
naming the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .atomic_io import atomic_write_text

from .errors import ConfigError, nearest


@dataclass
class VideoConfig:
    """Video input geometry. Clips are ``[B, num_frames, crop_size, crop_size, 3]`` in [-1, 1]."""

    num_frames: int = 32
    fps: float = 10.0
    crop_size: int = 224
    patch_size: tuple[int, int, int] = (4, 16, 16)  # (time, height, width) of one voxel
    drop_rate: float = 0.5  # DropToken rate in training (eval drops nothing)
    # Agnostic fine-tunes (official VideoModel with pre/post projection): Linear(D->D)+GELU on the
    # voxel embeddings before positions, Linear(D->post_proj_dim)+GELU after the encoder (0: none).
    pre_proj: bool = False
    post_proj_dim: int = 0

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid ``(t, h, w)`` of the position tables, e.g. (8, 14, 14) for the paper."""
        pt, ph, pw = self.patch_size
        return self.num_frames // pt, self.crop_size // ph, self.crop_size // pw

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


@dataclass
class AudioConfig:
    """Audio input geometry: mono waveform ``[B, num_samples]`` in [-1, 1] at ``sample_rate`` Hz."""

    sample_rate: int = 48000
    num_samples: int = 153600  # 3.2 s, the window of 32 frames at 10 fps
    patch_size: int = 128  # samples per token
    drop_rate: float = 0.5
    pre_proj: bool = False  # as VideoConfig (agnostic fine-tunes)
    post_proj_dim: int = 0

    @property
    def num_tokens(self) -> int:
        return self.num_samples // self.patch_size


@dataclass
class TextConfig:
    """Text input: ``max_words`` word ids per caption from a vocabulary of ``vocab_size``."""

    max_words: int = 16
    vocab_size: int = 2**16
    word_dim: int = 300  # official: frozen word2vec vectors; ours: learned unless supplied
    trainable_word_table: bool = True
    num_buckets: int = 32  # T5 relative position buckets (bidirectional)
    max_distance: int = 64


@dataclass
class EncoderConfig:
    """Transformer size: layers, width ``D``, MLP hidden size, heads (head dim ``D / heads``)."""

    num_layers: int = 12
    width: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12


SIZES: dict[str, EncoderConfig] = {
    "small": EncoderConfig(6, 512, 2048, 8),
    "base": EncoderConfig(12, 768, 3072, 12),
    "medium": EncoderConfig(12, 1024, 4096, 16),
    "large": EncoderConfig(24, 1024, 4096, 16),
    "xlarge": EncoderConfig(24, 1536, 4096, 24),  # video only in the paper
}


@dataclass
class HeadConfig:
    """Common-space projection heads (S_va of size ``va_dim``, S_vt of size ``vt_dim``).

    ``bn_placement``: ``"official"`` (default; BN only inside the video MLP and after the
    video->S_vt linear, audio and text heads are plain biased linears) or ``"paper"`` (BN after
    every linear, as the paper describes).
    """

    va_dim: int = 512
    vt_dim: int = 256
    bn_placement: str = "official"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1  # PyTorch convention (Keras 0.9)


@dataclass
class ClassifierConfig:
    """A classification head on one tower's AGG feature (a fine-tuned model, e.g. converted from
    an official K400 or AudioSet checkpoint): ``Linear(D -> num_classes)``.

    ``multilabel``: class scores are sigmoids (AudioSet) instead of a softmax (Kinetics).
    ``classes``: class names in logit order, when known.
    """

    modality: str = "video"
    num_classes: int = 400
    multilabel: bool = False
    classes: list | None = None


@dataclass
class ModelConfig:
    """The whole VATT model. ``shared_encoder`` set -> modality-agnostic (one encoder for all).

    ``droptoken``: ``"batch"`` (default, official: one random permutation shared by the batch) or
    ``"sample"`` (each sample keeps its own random subset; same count).
    ``dropout``: on embeddings, residual branches, MLP hidden and final outputs (official 0.1).
    ``attention_dropout``: on the attention probabilities (official 0.1). On CPU a non-zero value
    makes ``scaled_dot_product_attention`` fall back from the fused kernel to the math path
    (about 4x slower attention, N x N memory); set 0 for speed there. GPU kernels fuse it.
    ``droptoken_keep``: how many tokens DropToken keeps: ``"table"`` (default, official: a count
    fixed by the position-table size, ``(1 - rate) * t*h*w`` of the tables, at most all tokens) or
    ``"tokens"`` (``(1 - rate)`` of the actual tokens; differs at other crops and for images).
    ``position_resample``: position tables resized to another token grid by ``"spline"``
    (default, official order-3 spline, start aligned) or ``"bicubic"`` (centre aligned).
    ``classifier``: an optional classification head (fine-tuned models), see :class:`ClassifierConfig`.
    ``validate_inputs``: check input shapes and ranges at every forward (one min/max per tensor);
    turn off for speed once the pipeline is known to be right.
    """

    name: str = "mbs"
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    video_encoder: EncoderConfig = field(default_factory=lambda: dataclasses.replace(SIZES["medium"]))
    audio_encoder: EncoderConfig = field(default_factory=lambda: dataclasses.replace(SIZES["base"]))
    text_encoder: EncoderConfig = field(default_factory=lambda: dataclasses.replace(SIZES["small"]))
    shared_encoder: EncoderConfig | None = None
    post_proj_dim: int = 1024  # modality-agnostic model: Linear(->1024)+GELU after the encoder
    heads: HeadConfig = field(default_factory=HeadConfig)
    droptoken: str = "batch"
    droptoken_keep: str = "table"
    position_resample: str = "spline"
    classifier: ClassifierConfig | None = None
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    validate_inputs: bool = True

    @property
    def modality_agnostic(self) -> bool:
        return self.shared_encoder is not None

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        cfg = _build(cls, data, prefix="")
        cfg.check()
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON or YAML (by suffix: .json, .yaml/.yml) atomically."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in (".yaml", ".yml") else self.to_json()
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelConfig":
        """Read a config written by :meth:`save` (JSON or YAML)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            # JSON with json: PyYAML would read JSON's 1e-05 (no dot) as a string.
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not a valid JSON/YAML config: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} should hold a mapping of config keys, got {type(data).__name__}")
        return cls.from_dict(data)

    def override(self, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> "ModelConfig":
        """A copy with dotted-key overrides applied (``{"video.drop_rate": 0.25}``)."""
        return apply_overrides(self, {**(overrides or {}), **kwargs})

    def check(self) -> None:
        """Raise ConfigError for values that cannot build a model."""
        v, a = self.video, self.audio
        if any(n % p for n, p in zip((v.num_frames, v.crop_size, v.crop_size), v.patch_size)):
            raise ConfigError(
                f"video.num_frames={v.num_frames} and video.crop_size={v.crop_size} must be multiples of "
                f"video.patch_size={list(v.patch_size)}"
            )
        if a.num_samples % a.patch_size:
            raise ConfigError(f"audio.num_samples={a.num_samples} must be a multiple of audio.patch_size={a.patch_size}")
        for name in ("video", "audio"):
            rate = getattr(self, name).drop_rate
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{name}.drop_rate must be in [0, 1), got {rate}")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if self.droptoken not in ("batch", "sample"):
            raise ConfigError(f"droptoken must be 'batch' or 'sample', got {self.droptoken!r}")
        if self.droptoken_keep not in ("table", "tokens"):
            raise ConfigError(f"droptoken_keep must be 'table' or 'tokens', got {self.droptoken_keep!r}")
        if self.position_resample not in ("spline", "bicubic"):
            raise ConfigError(f"position_resample must be 'spline' or 'bicubic', got {self.position_resample!r}")
        c = self.classifier
        if c is not None and (c.modality not in ("video", "audio") or c.num_classes < 1
                              or (c.classes is not None and len(c.classes) != c.num_classes)):
            raise ConfigError(f"classifier needs modality 'video' or 'audio', num_classes >= 1 and as many class "
                              f"names as classes; got {c}")
        if self.heads.bn_placement not in ("official", "paper"):
            raise ConfigError(f"heads.bn_placement must be 'official' or 'paper', got {self.heads.bn_placement!r}")
        for key in ("video_encoder", "audio_encoder", "text_encoder", "shared_encoder"):
            enc = getattr(self, key)
            if enc is not None and enc.width % enc.num_heads:
                raise ConfigError(f"{key}.width={enc.width} is not divisible by {key}.num_heads={enc.num_heads}")
        if not 2 < self.text.vocab_size <= 2**16:
            raise ConfigError(f"text.vocab_size must be in (2, 65536], got {self.text.vocab_size}")


# -- presets -------------------------------------------------------------------------------------
def _size(name: str) -> EncoderConfig:
    return dataclasses.replace(SIZES[name])


def _paper(name: str, video_size: str) -> ModelConfig:
    return ModelConfig(name=name, video_encoder=_size(video_size))


def _tiny() -> ModelConfig:
    width = EncoderConfig(num_layers=2, width=128, mlp_dim=512, num_heads=2)
    return ModelConfig(
        name="tiny",
        video=VideoConfig(num_frames=8, fps=10.0, crop_size=64, patch_size=(2, 16, 16), drop_rate=0.5),
        audio=AudioConfig(sample_rate=16000, num_samples=12800, patch_size=128, drop_rate=0.5),
        text=TextConfig(max_words=16, vocab_size=4096, word_dim=64),
        video_encoder=dataclasses.replace(width),
        audio_encoder=dataclasses.replace(width),
        text_encoder=dataclasses.replace(width),
    )


def _ma_medium() -> ModelConfig:
    return ModelConfig(name="ma-medium", shared_encoder=_size("medium"))


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": _tiny,
    "bbs": lambda: _paper("bbs", "base"),
    "mbs": lambda: _paper("mbs", "medium"),
    "lbs": lambda: _paper("lbs", "large"),
    "ma-medium": _ma_medium,
}
DEFAULT_PRESET = "mbs"


def list_presets() -> list[str]:
    return list(PRESETS)


def get_config(name: str = DEFAULT_PRESET, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> ModelConfig:
    """The preset ``name`` with dotted/nested overrides applied."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{nearest(str(name), PRESETS)}")
    return apply_overrides(PRESETS[name](), {**(overrides or {}), **kwargs})


# -- overrides -----------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, Any]:
    """``"video.drop_rate=0.25"`` -> ``("video.drop_rate", 0.25)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"an override looks like key=value (e.g. video.drop_rate=0.25), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def apply_overrides(cfg: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """Return a copy of ``cfg`` with ``overrides`` applied; keys are dotted paths or nested dicts."""
    data = cfg.to_dict()
    for key, value in _flatten(overrides).items():
        _set_dotted(data, key.replace("__", "."), value)
    return ModelConfig.from_dict(data)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys, so ``video={"drop_rate": 0.25}`` changes only that field."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = data
    cls: Any = ModelConfig
    for i, part in enumerate(parts):
        types = _field_types(cls)
        path = ".".join(parts[:i])
        if part not in types:
            bad = ".".join(parts[: i + 1])
            valid = [f"{path}.{k}" if path else k for k in types]
            where = f" (in {key!r})" if bad != key else ""
            raise ConfigError(f"unknown config key {bad!r}{nearest(bad, valid)}{where}")
        ftype = _dataclass_of(types[part])
        if i == len(parts) - 1:
            if ftype is not None and isinstance(value, str):
                if value not in SIZES:  # an encoder given by size name
                    raise ConfigError(f"unknown encoder size {value!r} for {key}{nearest(value, SIZES)}")
                value = dataclasses.asdict(SIZES[value])
            node[part] = value
            return
        if ftype is None:
            raise ConfigError(f"config key {'.'.join(parts[: i + 1])!r} is a value, not a group; got {key!r}")
        if node.get(part) is None:  # e.g. shared_encoder.width on a modality-specific model
            node[part] = dataclasses.asdict(ftype())
        node, cls = node[part], ftype


# -- dataclass <-> dict ----------------------------------------------------------------------------
def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _dataclass_of(tp) -> type | None:
    """The dataclass inside ``X`` or ``X | None``, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _build(cls, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"config group {prefix.rstrip('.') or 'root'} should be a mapping, got {type(data).__name__}")
    types = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types:
            valid = [prefix + k for k in types]
            raise ConfigError(f"unknown config key {prefix + key!r}{nearest(prefix + key, valid)}")
        kwargs[key] = _coerce(types[key], value, prefix + key)
    return cls(**kwargs)


def _coerce(tp, value, key: str):
    sub = _dataclass_of(tp)
    if sub is not None:
        if value is None and type(None) in typing.get_args(tp):
            return None
        return _build(sub, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(tp)):
            raise ConfigError(f"{key} should be a list of {len(typing.get_args(tp))} numbers, got {value!r}")
        return tuple(_coerce(t, v, key) for t, v in zip(typing.get_args(tp), value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} should be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key} should be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} should be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} should be a string, got {value!r}")
        return value
    return value


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
