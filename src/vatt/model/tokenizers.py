"""Raw signal -> token embeddings, learned positions, and DropToken.

* :class:`VideoTokenizer`: ``[B, T, H, W, 3]`` -> ``[B, t*h*w, D]``: non-overlapping voxels, each
  linearly projected (the official Conv3d with kernel = stride = patch, written as a Linear over
  flattened voxels), tokens in (t, h, w) order.
* :class:`AudioTokenizer`: ``[B, S]`` -> ``[B, S / patch, D]`` (the official Conv1d likewise).
* :class:`SpatioTemporalPositions` / :class:`TemporalPositions`: factorised learned tables; the
  summed position embedding goes through LayerNorm before it is added (as the official code does),
  then dropout. A grid that differs from the table size resamples the tables (bicubic).
* DropToken (:func:`keep_indices`, :func:`drop_tokens`), training only.

DropToken keeps a random subset of tokens after the position encoding. Projection and position
are per-token, so selecting the kept voxels *before* projecting them gives exactly the official
result while skipping the projection of dropped tokens; the tokenizers take ``drop_rate`` for that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resample_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Resample a ``[n, D]`` position table to ``[size, D]`` along its first axis.

    The official code fits an order-3 spline over positions ``i / n``; we use bicubic
    interpolation (``align_corners=False``), which matches it closely and is differentiable.
    ``size == 1`` (a still image: one temporal token) takes the table's centre.
    """
    n, d = table.shape
    if size == n:
        return table
    grid = table.t().reshape(1, d, n, 1)
    out = F.interpolate(grid.float(), size=(size, 1), mode="bicubic", align_corners=False)
    return out.reshape(d, size).t().to(table.dtype)


def _trunc_normal_table(n: int, d: int) -> nn.Parameter:
    table = torch.empty(n, d)
    std = d**-0.5
    nn.init.trunc_normal_(table, std=std, a=-2 * std, b=2 * std)
    return nn.Parameter(table)


def num_kept(num_tokens: int, drop_rate: float) -> int:
    """Tokens DropToken keeps: ``int((1 - rate) * n)`` (784 of 1568 and 600 of 1200 at rate 0.5)."""
    return max(1, int((1.0 - drop_rate) * num_tokens + 1e-6))


def keep_indices(batch: int, num_tokens: int, drop_rate: float, per_sample: bool = False,
                 device: torch.device | str | None = None) -> torch.Tensor | None:
    """Indices of the tokens DropToken keeps: ``[k]`` shared by the batch (official: one random
    permutation for the whole batch) or ``[B, k]`` with ``per_sample``; None when nothing drops.

    The official code sizes the kept set from the position table; we size it from the actual
    token count, which is the same at the pretraining geometry and also works for other grids.
    """
    if drop_rate <= 0.0:
        return None
    k = num_kept(num_tokens, drop_rate)
    if per_sample:
        return torch.rand(batch, num_tokens, device=device).argsort(dim=1)[:, :k]
    return torch.randperm(num_tokens, device=device)[:k]


def take_tokens(x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """``x`` [B, N, C] (or a shared [N, C]) at ``idx`` [k] or [B, k] -> [B, k, C] (or [k, C])."""
    if idx is None:
        return x
    if idx.ndim == 1:
        return x[..., idx, :]
    if x.ndim == 2:  # a table shared by the batch, per-sample indices
        return x[idx]
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))


def drop_tokens(x: torch.Tensor, drop_rate: float, per_sample: bool = False) -> torch.Tensor:
    """DropToken on a token sequence ``x`` [B, N, D] -> [B, num_kept(N, rate), D]."""
    return take_tokens(x, keep_indices(x.shape[0], x.shape[1], drop_rate, per_sample, x.device))


class SpatioTemporalPositions(nn.Module):
    """Temporal, vertical and horizontal tables summed, LayerNorm, added, dropout.

    Args:
        grid: table sizes ``(t, h, w)``, e.g. (8, 14, 14).
        width: model width ``D``.
    """

    def __init__(self, grid: tuple[int, int, int], width: int, dropout: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.temporal = _trunc_normal_table(grid[0], width)
        self.vertical = _trunc_normal_table(grid[1], width)
        self.horizontal = _trunc_normal_table(grid[2], width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.drop = nn.Dropout(dropout)

    def embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The position embedding ``[t*h*w, D]`` for a token grid (resampled if needed)."""
        t, h, w = grid
        pos = (
            resample_table(self.temporal, t)[:, None, None]
            + resample_table(self.vertical, h)[None, :, None]
            + resample_table(self.horizontal, w)[None, None, :]
        )
        return self.norm(pos.reshape(t * h * w, -1))

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int], idx: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, t*h*w, D] (or the kept tokens ``idx`` of that grid) -> same shape."""
        return self.drop(x + take_tokens(self.embedding(grid), idx).to(x.dtype))


class TemporalPositions(nn.Module):
    """One learned table (audio: 1200 positions; modality-agnostic text: 16), LayerNorm, add, dropout."""

    def __init__(self, length: int, width: int, dropout: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.table = _trunc_normal_table(length, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, num_tokens: int | None = None, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, N, D] (or the kept tokens ``idx`` of ``num_tokens``) -> same shape; the
        table is resampled when ``N`` differs from its length."""
        pos = self.norm(resample_table(self.table, num_tokens or x.shape[1]))
        return self.drop(x + take_tokens(pos, idx).to(x.dtype))


def _init_patch_projection(proj: nn.Linear, receptive: int) -> None:
    """Glorot-uniform with the official convolution's fans (Keras: fan_out = kernel volume x
    filters), zero bias."""
    fan_in, fan_out = proj.in_features, receptive * proj.out_features
    bound = (6.0 / (fan_in + fan_out)) ** 0.5
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)


def video_patches(video: torch.Tensor, patch_size) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``[B, T, H, W, C]`` -> flattened voxels ``[B, t*h*w, pt*ph*pw*C]`` (one copy) and the grid."""
    b, t, h, w, c = video.shape
    pt, ph, pw = patch_size
    grid = (t // pt, h // ph, w // pw)
    x = video.reshape(b, grid[0], pt, grid[1], ph, grid[2], pw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, grid[0] * grid[1] * grid[2], pt * ph * pw * c), grid


class VideoTokenizer(nn.Module):
    """Voxels -> tokens with positions. ``[B, T, H, W, 3]`` -> ``[B, t*h*w (or kept), D]``.

    Args:
        patch_size: voxel ``(pt, ph, pw)``, e.g. (4, 16, 16).
        grid: position table sizes, e.g. (8, 14, 14) for 32x224x224 clips.
        width: output width ``D``.
        with_positions: False for the modality-agnostic model, which projects the voxel
            embeddings again before adding positions.

    The projection is the official Conv3d (kernel = stride = voxel) as a Linear over voxels
    flattened in (t, h, w, channel) order (a Conv3d kernel ``[D, 3, pt, ph, pw]`` maps to it by
    ``kernel.permute(0, 2, 3, 4, 1).reshape(D, -1)``); Glorot-uniform with the Conv3d's fans.
    """

    def __init__(self, patch_size, grid, width: int, dropout: float = 0.1, eps: float = 1e-6,
                 with_positions: bool = True):
        super().__init__()
        self.patch_size = tuple(patch_size)
        voxel = self.patch_size[0] * self.patch_size[1] * self.patch_size[2] * 3
        self.proj = nn.Linear(voxel, width)
        _init_patch_projection(self.proj, voxel // 3)
        self.positions = SpatioTemporalPositions(tuple(grid), width, dropout, eps) if with_positions else None

    def forward(self, video: torch.Tensor, drop_rate: float = 0.0, per_sample: bool = False) -> torch.Tensor:
        """Tokens with positions; ``drop_rate`` > 0 keeps only a random subset (DropToken)."""
        voxels, grid = video_patches(video, self.patch_size)
        idx = keep_indices(voxels.shape[0], voxels.shape[1], drop_rate, per_sample, video.device)
        return self.positions(self.proj(take_tokens(voxels, idx)), grid, idx)


class AudioTokenizer(nn.Module):
    """Waveform patches -> tokens with positions. ``[B, S]`` -> ``[B, S / patch (or kept), D]``.

    The projection is the official Conv1d (kernel = stride = patch) as a Linear over patches.
    """

    def __init__(self, patch_size: int, length: int, width: int, dropout: float = 0.1, eps: float = 1e-6,
                 with_positions: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(patch_size, width)
        _init_patch_projection(self.proj, patch_size)
        self.positions = TemporalPositions(length, width, dropout, eps) if with_positions else None

    def patches(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` -> ``[B, S / patch, patch]`` (a view, no copy)."""
        return audio.reshape(audio.shape[0], -1, self.patch_size)

    def forward(self, audio: torch.Tensor, drop_rate: float = 0.0, per_sample: bool = False) -> torch.Tensor:
        patches = self.patches(audio)
        idx = keep_indices(patches.shape[0], patches.shape[1], drop_rate, per_sample, audio.device)
        return self.positions(self.proj(take_tokens(patches, idx)), patches.shape[1], idx)
