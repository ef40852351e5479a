"""Clip augmentation on uint8 frames (SPEC §4), run inside loader workers.

Training, official default: shorter side resized to ``cfg.resize`` times a scale jitter in
[0.8, 1.2] (p = 0.8), random ``crop_size`` square, horizontal flip (p = 0.5), colour jitter
(p = 0.8: brightness ±32/255, contrast and saturation 0.6-1.4, hue ±0.2 turns); the paper's
Inception-style crop (area 0.08-1, aspect 0.5-2) is ``crop_mode="inception"``. One set of random
parameters per clip, shared by all its frames. Evaluation: shorter side resized to
``cfg.resize``, centre crop, or 3 crops along the longer side.

The crop is located in source coordinates and only that region is resized, which equals
"resize, then crop" up to interpolation and costs ``crop_size²`` per frame instead of the full
frame. Output frames are float32 ``[T, crop, crop, 3]`` in [-1, 1].

Deferred colour (``DataConfig.device_augment``, what training uses): the worker stops after the
crop and flip and hands over uint8 frames plus the clip's colour map as a ``[3, 4]`` affine matrix
(:func:`train_video_deferred`); :func:`finish_batch` applies the maps of a whole batch on the
training device in one batched matrix product and one clip (:func:`apply_color_maps`). Same random
draws, same result within fp32 rounding (4.8e-7 measured), a quarter of the bytes per clip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import DataConfig

# RGB <-> YIQ: hue rotation is a rotation of the (I, Q) plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _crop_resize_u8(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]``, box (top, left, h, w) -> uint8 ``[T, 3, size, size]`` (channels-last memory)."""
    top, left, h, w = box
    x = torch.from_numpy(frames[:, top : top + h, left : left + w]).permute(0, 3, 1, 2)  # channels-last view
    if (h, w) != (size, size):  # no resize when the box already has the crop size (e.g. prepared data)
        # Resizing uint8 (channels-last) is ~7x faster on CPU than float and differs by <= 1/255.
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def _crop_resize(frames: np.ndarray, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]``, box (top, left, h, w) -> float ``[T, size, size, 3]`` in [0, 1]."""
    return _crop_resize_u8(frames, box, size).permute(0, 2, 3, 1).float().div_(255.0)


def _official_box(H: int, W: int, cfg: DataConfig, rng: np.random.Generator) -> tuple[int, int, int, int]:
    lo, hi, p = cfg.scale_jitter
    scale = rng.uniform(lo, hi) if rng.random() < p else 1.0
    short = max(cfg.crop_size, cfg.resize * scale)
    side = min(min(H, W), max(1, round(cfg.crop_size * min(H, W) / short)))
    top = int(rng.integers(0, H - side + 1))
    left = int(rng.integers(0, W - side + 1))
    return top, left, side, side


def _inception_box(H: int, W: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = H * W
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= W and 0 < h <= H:
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    side = min(H, W)
    return (H - side) // 2, (W - side) // 2, side, side


def eval_boxes(H: int, W: int, cfg: DataConfig, num_crops: int = 1) -> list[tuple[int, int, int, int]]:
    """Crop boxes (top, left, h, w) in source pixels: centre, or 3 along the longer side."""
    side = min(min(H, W), max(1, round(cfg.crop_size * min(H, W) / cfg.resize)))
    if num_crops == 1:
        return [((H - side) // 2, (W - side) // 2, side, side)]
    if W >= H:
        return [((H - side) // 2, left, side, side) for left in (0, (W - side) // 2, W - side)]
    return [(top, (W - side) // 2, side, side) for top in (0, (H - side) // 2, H - side)]


_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _jitter_affine(mean_rgb: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one colour jitter; return ``(lin, off)`` with ``x_out = clip(lin @ x + off, 0, 1)``.

    ``mean_rgb`` is the clip's mean colour in [0, 1] (the contrast pivot needs its luma).
    """
    b = float(rng.uniform(-32 / 255, 32 / 255))
    c = float(rng.uniform(0.6, 1.4))
    s = float(rng.uniform(0.6, 1.4))
    theta = float(rng.uniform(-0.2, 0.2)) * 2 * math.pi
    eye = torch.eye(3)
    m = float(mean_rgb @ _LUMA) + b  # mean luma after the brightness shift
    sat = s * eye + (1 - s) * torch.outer(torch.ones(3), _LUMA)  # x -> s x + (1 - s) g(x)
    rot = torch.tensor([[1.0, 0, 0], [0, math.cos(theta), -math.sin(theta)], [0, math.sin(theta), math.cos(theta)]])
    hue = _YIQ2RGB @ rot @ _RGB2YIQ
    lin = hue @ sat * c  # applied to column vectors: x_out = lin @ x + off
    off = hue @ sat @ torch.full((3,), b * c + m * (1 - c))
    return lin, off


def color_jitter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue on float ``[T, H, W, 3]`` in [0, 1] (one draw per clip).

    In order: ``x + b`` (b in ±32/255); contrast ``(x - m) c + m`` around the mean luma m
    (c in 0.6-1.4); saturation ``g + (x - g) s`` around each pixel's luma g (s in 0.6-1.4); hue
    rotation by ±0.2 turns in the YIQ chroma plane; then clipped to [0, 1]. All steps are affine
    in x, so they are composed into one 3x3 matrix and offset: a single pass over the clip.
    """
    lin, off = _jitter_affine(x.reshape(-1, 3).mean(0), rng)
    return torch.addmm(off, x.reshape(-1, 3), lin.T).reshape(x.shape).clamp_(0.0, 1.0)


def _channel_means(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean in [0, 1] of uint8 ``[T, 3, H, W]`` (channels-last memory), exact: integer
    sums per frame (int32 cannot overflow below 2900 x 2900 pixels) then over frames. Measured on a
    paper clip (32 x 224², one thread): 5 ms, against 8 ms for a float32 copy and its mean, which
    also rounds (1e-5 off the exact mean of 127)."""
    n = x.shape[0] * x.shape[2] * x.shape[3]
    sums = x.sum(dim=(2, 3), dtype=torch.int32).sum(dim=0, dtype=torch.int64)
    return (sums.double() / (255.0 * max(n, 1))).float()


class _OneThread:
    """Run torch ops on one thread (a no-op in loader workers, which have one already): oneDNN's
    convolution and parallel reductions round differently with other thread counts, and a clip
    must come out bit-identical in a worker and in the main process (``num_workers=0``)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.n != 1:
            torch.set_num_threads(self.n)


def train_video(frames: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> augmented float32 ``[T, crop, crop, 3]`` in [-1, 1].

    Equal (up to float rounding) to: crop and resize, flip, :func:`color_jitter` on [0, 1], then
    ``2 x - 1``. Computed in fewer passes: the flip runs on uint8, and the jitter, the 1/255 and
    the ``2 x - 1`` are one 3x3 affine map (a 1x1 convolution over channels-last memory, ~2x
    cheaper on CPU than a ``[N, 3] @ [3, 3]`` matmul) followed by one clip to [-1, 1].
    """
    T, H, W, _ = frames.shape
    box = _inception_box(H, W, rng) if cfg.crop_mode == "inception" else _official_box(H, W, cfg, rng)
    x = _crop_resize_u8(frames, box, cfg.crop_size)  # [T, 3, c, c] uint8, channels-last
    if cfg.flip and rng.random() < 0.5:
        x = x.flip(3)
    jitter = cfg.color_jitter and rng.random() < cfg.color_jitter_prob
    mean = _channel_means(x) if jitter else None
    x = x.to(torch.float32, memory_format=torch.channels_last)  # NCHW conv over this layout is ~20x slower
    if jitter:
        with _OneThread():
            lin, off = _jitter_affine(mean, rng)
            # clip(lin x/255 + off, 0, 1) * 2 - 1 == clip((2/255) lin x + (2 off - 1), -1, 1)
            y = F.conv2d(x, (lin * (2.0 / 255.0))[:, :, None, None], off * 2.0 - 1.0).clamp_(-1.0, 1.0)
    else:
        y = x.mul_(2.0 / 255.0).sub_(1.0)
    return y.permute(0, 2, 3, 1).contiguous()  # channels-last memory: the permute is free


def train_video_deferred(frames: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`train_video` up to the colour step: uint8 ``[T, crop, crop, 3]`` (cropped, resized,
    flipped) and its colour map ``[3, 4]`` (``y = clip(M[:, :3] x + M[:, 3], -1, 1)`` on uint8 x),
    drawing the same random numbers in the same order; :func:`apply_color_maps` finishes it."""
    T, H, W, _ = frames.shape
    box = _inception_box(H, W, rng) if cfg.crop_mode == "inception" else _official_box(H, W, cfg, rng)
    x = _crop_resize_u8(frames, box, cfg.crop_size)  # [T, 3, c, c] uint8, channels-last
    if cfg.flip and rng.random() < 0.5:
        x = x.flip(3)
    if cfg.color_jitter and rng.random() < cfg.color_jitter_prob:
        lin, off = _jitter_affine(_channel_means(x), rng)  # the same exact mean as train_video's
        color = torch.cat([lin * (2.0 / 255.0), (off * 2.0 - 1.0)[:, None]], dim=1)
    else:
        color = IDENTITY_COLOR.clone()
    return x.permute(0, 2, 3, 1).contiguous(), color


# x / 255 * 2 - 1: the colour map of a clip without jitter
IDENTITY_COLOR = torch.cat([torch.eye(3) * (2.0 / 255.0), -torch.ones(3, 1)], dim=1)


def apply_color_maps(video: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` and colour maps ``[B, 3, 4]`` -> float32 ``[B, T, H, W, 3]`` in
    [-1, 1], on the tensors' device: one batched ``[B, THW, 3] @ [B, 3, 3]`` plus offset, one clip."""
    B = video.shape[0]
    color = color.to(device=video.device, dtype=torch.float32)
    x = video.reshape(B, -1, 3).to(torch.float32)
    y = torch.baddbmm(color[:, None, :, 3], x, color[:, :, :3].transpose(1, 2))
    return y.clamp_(-1.0, 1.0).reshape(video.shape)


def finish_batch(batch: dict) -> dict:
    """Finish a batch of deferred training clips (``"video_affine"`` present) on its device; other
    batches pass unchanged. Call after moving the batch to the training device."""
    if "video_affine" not in batch:
        return batch
    out = dict(batch)
    out["video"] = apply_color_maps(out["video"], out.pop("video_affine"))
    return out


def eval_video(frames: np.ndarray, cfg: DataConfig, num_crops: int = 1) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[num_crops, T, crop, crop, 3]`` in [-1, 1] (resize + crop)."""
    T, H, W, _ = frames.shape
    views = [_crop_resize(frames, box, cfg.crop_size) for box in eval_boxes(H, W, cfg, num_crops)]
    return torch.stack(views).mul_(2.0).sub_(1.0).contiguous()


def train_audio(audio: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> torch.Tensor:
    """float32 ``[S]`` -> ``[S]`` with Gaussian noise of std ``cfg.audio_noise * max|x|``, clipped to [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    peak = float(x.abs().max()) if x.numel() else 0.0
    if cfg.audio_noise > 0 and peak > 0:
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        x = x + torch.randn(x.shape, generator=g) * (cfg.audio_noise * peak)
    return x.clamp_(-1.0, 1.0)


def eval_audio(audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).clamp_(-1.0, 1.0)
