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
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .config_engine import ConfigBase, check_choice, check_number, parse_override  # noqa: F401 (re-export)
from .errors import ConfigError, nearest


@dataclass
class VideoConfig(ConfigBase):
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

    def check(self) -> None:
        check_number(self.num_frames, "video.num_frames", low=1, high=MAX_FRAMES)
        check_number(self.fps, "video.fps", low=0, low_open=True, high=1000)
        check_number(self.crop_size, "video.crop_size", low=1, high=MAX_SIDE)
        for p in self.patch_size:
            check_number(p, "video.patch_size", low=1, high=MAX_SIDE)
        check_number(self.drop_rate, "video.drop_rate", low=0, high=1, high_open=True)
        check_number(self.post_proj_dim, "video.post_proj_dim", low=0, high=MAX_WIDTH)
        if any(n % p for n, p in zip((self.num_frames, self.crop_size, self.crop_size), self.patch_size)):
            raise ConfigError(f"video.num_frames={self.num_frames} and video.crop_size={self.crop_size} must be "
                              f"multiples of video.patch_size={list(self.patch_size)}")

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
class AudioConfig(ConfigBase):
    """Audio input geometry: mono waveform ``[B, num_samples]`` in [-1, 1] at ``sample_rate`` Hz."""

    sample_rate: int = 48000
    num_samples: int = 153600  # 3.2 s, the window of 32 frames at 10 fps
    patch_size: int = 128  # samples per token
    drop_rate: float = 0.5
    pre_proj: bool = False  # as VideoConfig (agnostic fine-tunes)
    post_proj_dim: int = 0

    def check(self) -> None:
        check_number(self.sample_rate, "audio.sample_rate", low=1, high=10**6)
        check_number(self.num_samples, "audio.num_samples", low=1, high=MAX_SAMPLES)
        check_number(self.patch_size, "audio.patch_size", low=1, high=MAX_SAMPLES)
        check_number(self.drop_rate, "audio.drop_rate", low=0, high=1, high_open=True)
        check_number(self.post_proj_dim, "audio.post_proj_dim", low=0, high=MAX_WIDTH)
        if self.num_samples % self.patch_size:
            raise ConfigError(f"audio.num_samples={self.num_samples} must be a multiple of "
                              f"audio.patch_size={self.patch_size}")

    @property
    def num_tokens(self) -> int:
        return self.num_samples // self.patch_size


@dataclass
class TextConfig(ConfigBase):
    """Text input: ``max_words`` word ids per caption from a vocabulary of ``vocab_size``."""

    max_words: int = 16
    vocab_size: int = 2**16
    word_dim: int = 300  # official: frozen word2vec vectors; ours: learned unless supplied
    trainable_word_table: bool = True
    num_buckets: int = 32  # T5 relative position buckets (bidirectional)
    max_distance: int = 64

    def check(self) -> None:
        check_number(self.max_words, "text.max_words", low=1, high=4096)
        check_number(self.vocab_size, "text.vocab_size", low=2, low_open=True, high=2**16)
        check_number(self.word_dim, "text.word_dim", low=1, high=MAX_WIDTH)
        check_number(self.num_buckets, "text.num_buckets", low=2, high=4096)
        check_number(self.max_distance, "text.max_distance", low=1, high=10**6)


@dataclass
class EncoderConfig(ConfigBase):
    """Transformer size: layers, width ``D``, MLP hidden size, heads (head dim ``D / heads``)."""

    num_layers: int = 12
    width: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12

    @classmethod
    def from_name(cls, name: str) -> "EncoderConfig":
        """A paper size by name: small, base, medium, large, xlarge."""
        if name not in SIZES:
            raise ConfigError(f"unknown encoder size {name!r}{nearest(name, SIZES)}")
        return dataclasses.replace(SIZES[name])

    def check(self) -> None:
        check_number(self.num_layers, "num_layers", low=1, high=MAX_LAYERS)
        check_number(self.width, "width", low=1, high=MAX_WIDTH)
        check_number(self.mlp_dim, "mlp_dim", low=1, high=4 * MAX_WIDTH)
        check_number(self.num_heads, "num_heads", low=1, high=self.width)
        if self.width % self.num_heads:
            raise ConfigError(f"width={self.width} is not divisible by num_heads={self.num_heads}")


# Sanity bounds, far above any real VATT model: checked before anything is allocated.
MAX_WIDTH, MAX_LAYERS, MAX_FRAMES, MAX_SIDE, MAX_SAMPLES = 16384, 512, 4096, 8192, 48000 * 600
MAX_WEIGHTS = 20e9

SIZES: dict[str, EncoderConfig] = {
    "small": EncoderConfig(6, 512, 2048, 8),
    "base": EncoderConfig(12, 768, 3072, 12),
    "medium": EncoderConfig(12, 1024, 4096, 16),
    "large": EncoderConfig(24, 1024, 4096, 16),
    "xlarge": EncoderConfig(24, 1536, 4096, 24),  # video only in the paper
}


@dataclass
class HeadConfig(ConfigBase):
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

    def check(self) -> None:
        check_number(self.va_dim, "heads.va_dim", low=1, high=MAX_WIDTH)
        check_number(self.vt_dim, "heads.vt_dim", low=1, high=MAX_WIDTH)
        check_choice(self.bn_placement, "heads.bn_placement", ("official", "paper"))
        check_number(self.bn_eps, "heads.bn_eps", low=0, low_open=True)
        check_number(self.bn_momentum, "heads.bn_momentum", low=0, high=1)


@dataclass
class ClassifierConfig(ConfigBase):
    """A classification head on one tower's AGG feature (a fine-tuned model, e.g. converted from
    an official K400 or AudioSet checkpoint): ``Linear(D -> num_classes)``.

    ``multilabel``: class scores are sigmoids (AudioSet) instead of a softmax (Kinetics).
    ``classes``: class names in logit order, when known.
    """

    modality: str = "video"
    num_classes: int = 400
    multilabel: bool = False
    classes: list | None = None

    def check(self) -> None:
        check_choice(self.modality, "classifier.modality", ("video", "audio"))
        check_number(self.num_classes, "classifier.num_classes", low=1, high=10**6)
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ConfigError(f"classifier.classes has {len(self.classes)} names for {self.num_classes} classes")


# ModelConfig fields that choose how this machine runs the model, not what the model is: kept out of
# a saved model's config.json (VATT.save_pretrained) and ignored when one is loaded (an older file
# has them), so the loading machine's defaults apply. Training configs and checkpoints keep them.
RUNTIME_FIELDS = ("validate_inputs", "fused_qkv", "cpu_linear", "cpu_dropout")


@dataclass
class ModelConfig(ConfigBase):
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
    Runtime switches (:data:`RUNTIME_FIELDS`: not saved with a model, see :meth:`architecture_dict`):
    ``validate_inputs``: check input shapes and ranges at every forward (one min/max per tensor);
    turn off for speed once the pipeline is known to be right.
    ``fused_qkv``: one fused ``[3D, D]`` q/k/v projection instead of three (the state dict keeps
    the q/k/v layout; outputs bit-identical on torch's GEMM, within fp32 rounding on oneDNN).
    ``cpu_linear``: ``"auto"`` (default) picks by instruction set
    (:func:`vatt.model.fast_paths.resolve_cpu_linear`): ``"onednn"`` (fp32 CPU linears, forward and
    backward, on oneDNN: about 2x torch's GEMM on an AVX-512 EPYC) where the CPU has AVX-512,
    ``"torch"`` (torch's default GEMM: 1.17x oneDNN's step on an AVX2 Zen 3) elsewhere. Outputs
    equal within fp32 rounding. Neither switch affects GPUs or bf16 autocast. See docs/MODEL.md, "Performance notes (CPU)".
    ``cpu_dropout``: ``"bits"`` (default) makes CPU dropout masks from 16 random bits per element
    (numpy's SFC64 seeded from torch's generator; p quantised to 1/65536) and applies them in one
    pass, together with the residual add where one follows; ``"torch"`` is ``F.dropout``. Same
    distribution, other masks for a given seed; GPUs and ``torch.compile`` always use ``F.dropout``.
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
    fused_qkv: bool = True
    cpu_linear: str = "auto"
    cpu_dropout: str = "bits"

    @property
    def modality_agnostic(self) -> bool:
        return self.shared_encoder is not None

    def architecture_dict(self) -> dict:
        """:meth:`to_dict` without the runtime switches (:data:`RUNTIME_FIELDS`): the model itself,
        as ``save_pretrained`` writes it to ``config.json``."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def check(self) -> None:
        """Raise ConfigError for values that cannot build a model (each group checks itself first)."""
        for key in ("dropout", "attention_dropout"):
            check_number(getattr(self, key), key, low=0, high=1, high_open=True)
        check_number(self.layer_norm_eps, "layer_norm_eps", low=0, low_open=True, high=1)
        check_number(self.post_proj_dim, "post_proj_dim", low=1, high=MAX_WIDTH)
        check_choice(self.droptoken, "droptoken", ("batch", "sample"))
        check_choice(self.droptoken_keep, "droptoken_keep", ("table", "tokens"))
        check_choice(self.position_resample, "position_resample", ("spline", "bicubic"))
        check_choice(self.cpu_linear, "cpu_linear", ("auto", "onednn", "torch"))
        check_choice(self.cpu_dropout, "cpu_dropout", ("bits", "torch"))
        # Bound the size before anything is allocated (a typo such as width=1e9 would try to
        # allocate terabytes): ~12 D^2 weights per layer.
        weights = sum(12 * e.num_layers * e.width ** 2 for e in
                      (self.video_encoder, self.audio_encoder, self.text_encoder, self.shared_encoder) if e is not None)
        if weights > MAX_WEIGHTS:
            raise ConfigError(f"the encoders would hold ~{weights / 1e9:.0f}B weights (over the {MAX_WEIGHTS / 1e9:.0f}B "
                              "bound); check num_layers and width")


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
def apply_overrides(cfg: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """Return a copy of ``cfg`` with ``overrides`` applied; keys are dotted paths or nested dicts."""
    return cfg.override(overrides)
