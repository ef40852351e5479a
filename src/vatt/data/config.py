"""Clip geometry and augmentation settings of the data pipeline (SPEC §4).

The geometry comes from the model (``DataConfig.from_model_config(model.config)``) so a batch
always has the shape the model was built for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config_engine import ConfigBase, check_choice, check_number

CROP_MODES = ("official", "inception")


@dataclass
class AugmentConfig(ConfigBase):
    """Training augmentation (SPEC §4; official defaults). Set from a training config as
    ``data.augment.<key>`` (``--set data.augment.crop_mode=inception``).

    Args:
        min_resize: shorter side before cropping, pixels; default ``round(crop_size * 256 / 224)``.
        crop_mode: ``"official"`` (resize + scale jitter + random crop; official default) or
            ``"inception"`` (area 0.08-1, aspect 0.5-2, then resize; the paper's option).
        scale_jitter: (low, high, probability) of the random shorter-side scale (0.8, 1.2, 0.8).
        flip: horizontal flip in training.
        color_jitter: brightness ±32/255, contrast/saturation 0.6-1.4, hue ±0.2 with p = 0.8.
        color_jitter_prob: probability of applying colour jitter to a clip.
        audio_noise: Gaussian noise of std ``audio_noise * max|x|`` added in training (0.01).
    """

    min_resize: int | None = None
    crop_mode: str = "official"
    scale_jitter: tuple[float, float, float] = (0.8, 1.2, 0.8)
    flip: bool = True
    color_jitter: bool = True
    color_jitter_prob: float = 0.8
    audio_noise: float = 0.01

    def check(self) -> None:
        check_choice(self.crop_mode, "crop_mode", CROP_MODES)
        if self.min_resize is not None:
            check_number(self.min_resize, "min_resize", low=1, high=8192)
        low, high, prob = (float(x) for x in self.scale_jitter)
        check_number(low, "scale_jitter[0]", low=0, low_open=True)
        check_number(high, "scale_jitter[1]", low=low)
        check_number(prob, "scale_jitter[2]", low=0, high=1)
        self.scale_jitter = (low, high, prob)
        check_number(self.color_jitter_prob, "color_jitter_prob", low=0, high=1)
        check_number(self.audio_noise, "audio_noise", low=0)


@dataclass
class DataConfig(AugmentConfig):
    """Clip geometry (from the model) and augmentation (the fields of :class:`AugmentConfig`).

    Args:
        num_frames: frames per clip, T.
        fps: frame rate the clip is resampled to (frames picked by timestamp), frames/s.
        crop_size: side of the square crop, pixels.
        sample_rate: audio rate the window is resampled to, Hz.
        num_samples: audio samples per clip, S (equal span to the video: T / fps seconds).
        max_words: words per sentence (16).
        num_captions: sentences per clip (5: the one at the window's centre and 4 neighbours).
        max_member_mb: a shard member larger than this is never read (counted ``too_large``), MiB
            (training: ``--set data.max_member_mb=64``).
        device_augment: training samples leave the worker as uint8 crops (flipped) plus their
            colour map (``"video_affine"`` ``[3, 4]``); :func:`vatt.data.transforms.finish_batch`
            applies jitter, the 1/255 and the [-1, 1] mapping on the training device, batched
            (a quarter of the bytes through shared memory, no float pass in the worker). The
            training engine turns it on when it trains on an accelerator; every other reader gets float clips.
    """

    num_frames: int = 8
    fps: float = 10.0
    crop_size: int = 64
    sample_rate: int = 16000
    num_samples: int = 12800
    max_words: int = 16
    num_captions: int = 5
    max_member_mb: float = 1024.0
    device_augment: bool = False

    def check(self) -> None:
        super().check()
        for name in ("num_frames", "crop_size", "sample_rate", "num_samples", "max_words", "num_captions"):
            check_number(getattr(self, name), f"DataConfig.{name}", low=1)
        check_number(self.fps, "DataConfig.fps", low=0, low_open=True)
        check_number(self.max_member_mb, "max_member_mb", low=0, low_open=True)

    @property
    def resize(self) -> int:
        """Shorter side before cropping, pixels."""
        return int(self.min_resize or round(self.crop_size * 256 / 224))

    @property
    def clip_seconds(self) -> float:
        """Length of one window in seconds (T / fps)."""
        return self.num_frames / self.fps

    @classmethod
    def from_model_config(cls, model_cfg, augment: AugmentConfig | None = None, **overrides) -> "DataConfig":
        """Geometry from a model config (duck-typed: ``video``, ``audio``, ``text`` sections), the
        augmentation of ``augment`` (default: official), then field ``overrides``."""
        geo = (augment or AugmentConfig()).to_dict()
        geo.update(
            num_frames=int(model_cfg.video.num_frames),
            fps=float(model_cfg.video.fps),
            crop_size=int(model_cfg.video.crop_size),
            sample_rate=int(model_cfg.audio.sample_rate),
            num_samples=int(model_cfg.audio.num_samples),
            max_words=int(model_cfg.text.max_words),
        )
        geo.update(overrides)
        return cls.from_dict(geo)

    def replace(self, **kw) -> "DataConfig":
        return replace(self, **kw)
