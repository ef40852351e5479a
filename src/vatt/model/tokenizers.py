"""Raw signal -> token embeddings, learned positions, and DropToken.

* :class:`VideoTokenizer`: ``[B, T, H, W, 3]`` -> ``[B, t*h*w, D]`` by non-overlapping voxels
  (a Conv3d with kernel = stride = patch), tokens in (t, h, w) order.
* :class:`AudioTokenizer`: ``[B, S]`` -> ``[B, S / patch, D]`` (a Conv1d, kernel = stride = patch).
* :class:`SpatioTemporalPositions` / :class:`TemporalPositions`: factorised learned tables; the
  summed position embedding goes through LayerNorm before it is added (as the official code does),
  then dropout. A grid that differs from the table size resamples the tables (bicubic).
* :func:`drop_tokens`: DropToken (training only).
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

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """``x`` [B, t*h*w, D] -> same shape."""
        return self.drop(x + self.embedding(grid).to(x.dtype))


class TemporalPositions(nn.Module):
    """One learned table (audio: 1200 positions; modality-agnostic text: 16), LayerNorm, add, dropout."""

    def __init__(self, length: int, width: int, dropout: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.table = _trunc_normal_table(length, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, N, D] -> same shape (the table is resampled when ``N`` differs)."""
        pos = self.norm(resample_table(self.table, x.shape[1]))
        return self.drop(x + pos.to(x.dtype))


class VideoTokenizer(nn.Module):
    """Voxels -> tokens with positions. ``[B, T, H, W, 3]`` -> ``([B, t*h*w, D], (t, h, w))``.

    Args:
        patch_size: voxel ``(pt, ph, pw)``, e.g. (4, 16, 16).
        grid: position table sizes, e.g. (8, 14, 14) for 32x224x224 clips.
        width: output width ``D``.
        with_positions: False for the modality-agnostic model, which projects the voxel
            embeddings again before adding positions (then call :meth:`embed`).
    """

    def __init__(self, patch_size, grid, width: int, dropout: float = 0.1, eps: float = 1e-6, with_positions: bool = True):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(3, width, kernel_size=self.patch_size, stride=self.patch_size)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.positions = SpatioTemporalPositions(tuple(grid), width, dropout, eps) if with_positions else None

    def embed(self, video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Voxel projection only: ``[B, T, H, W, 3]`` -> ``[B, t*h*w, D]`` and the grid."""
        x = self.proj(video.permute(0, 4, 1, 2, 3))  # channels-last clips -> [B, 3, T, H, W]
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid

    def forward(self, video: torch.Tensor):
        x, grid = self.embed(video)
        return self.positions(x, grid), grid


class AudioTokenizer(nn.Module):
    """Waveform patches -> tokens with positions. ``[B, S]`` -> ``[B, S / patch, D]``."""

    def __init__(self, patch_size: int, length: int, width: int, dropout: float = 0.1, eps: float = 1e-6, with_positions: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv1d(1, width, kernel_size=patch_size, stride=patch_size)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.positions = TemporalPositions(length, width, dropout, eps) if with_positions else None

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        return self.proj(audio.unsqueeze(1)).transpose(1, 2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.positions(self.embed(audio))


def num_kept(num_tokens: int, drop_rate: float) -> int:
    """Tokens DropToken keeps: ``int((1 - rate) * n)`` (784 of 1568 and 600 of 1200 at rate 0.5)."""
    return max(1, int((1.0 - drop_rate) * num_tokens + 1e-6))


def drop_tokens(x: torch.Tensor, drop_rate: float, per_sample: bool = False) -> torch.Tensor:
    """DropToken: keep a random subset of ``num_kept(N, drop_rate)`` tokens of ``x`` [B, N, D].

    Official (default): one random permutation shared by the whole batch. ``per_sample=True``
    draws a separate subset per sample (same count). The official code sizes the kept set from
    the position table; we size it from the actual token count, which is the same at the
    pretraining geometry and also works for other grids.
    """
    if drop_rate <= 0.0:
        return x
    b, n, d = x.shape
    k = num_kept(n, drop_rate)
    if per_sample:
        idx = torch.rand(b, n, device=x.device).argsort(dim=1)[:, :k]
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(b, k, d))
    idx = torch.randperm(n, device=x.device)[:k]
    return x[:, idx]
