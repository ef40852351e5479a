"""Raw signal -> token embeddings, learned positions, and DropToken.

* :class:`VideoTokenizer`: ``[B, T, H, W, 3]`` -> ``[B, t*h*w, D]``: non-overlapping voxels, each
  linearly projected (the official Conv3d with kernel = stride = patch, written as a Linear over
  flattened voxels), tokens in (t, h, w) order.
* :class:`AudioTokenizer`: ``[B, S]`` -> ``[B, S / patch, D]`` (the official Conv1d likewise).
* :class:`SpatioTemporalPositions` / :class:`TemporalPositions`: factorised learned tables; the
  summed position embedding goes through LayerNorm before it is added (as the official code does),
  then dropout. A grid that differs from the table size resamples the tables (the official
  order-3 spline by default, :func:`resample_table`).
* DropToken (:func:`keep_indices`, :func:`drop_tokens`), training only.

DropToken keeps a random subset of tokens after the position encoding. Projection and position
are per-token, so selecting the kept voxels *before* projecting them gives exactly the official
result while skipping the projection of dropped tokens; the tokenizers take ``drop_rate`` for that.
"""

from __future__ import annotations

import functools
from typing import Callable
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


RESAMPLE_METHODS = ("spline", "bicubic")
KEEP_RULES = ("table", "tokens")


@functools.lru_cache(maxsize=64)
def spline_matrix(n: int, size: int) -> torch.Tensor:
    """The linear map ``[size, n]`` (float64) of the official position-table expansion.

    Official (``ExpandableEmbedding``): a polyharmonic spline of order 3 (kernel ``r^3`` plus a
    linear term, no smoothing) through the rows at positions ``i / n``, read at ``j / size``:
    start aligned, so a single target row is exactly row 0. The expansion is linear in the table,
    so we solve the spline system once per ``(n, size)`` in float64 and cache the matrix.

    The official code solves it in float32 (``tf.linalg.solve``), which leaves noise of about
    1e-3 of the table scale; for the 1200-row audio table the float32 system is so badly
    conditioned that the official expansion is numerically broken. We solve in float64, which is
    the spline the official code means to compute (at 1200 rows too); nobody can reproduce the
    broken float32 values exactly, so audio lengths other than 1200 tokens do not match official.
    """
    x = np.arange(n, dtype=np.float64) / n
    q = np.arange(size, dtype=np.float64) / size

    def phi(a, b):  # the official kernel: max(r^2, 1e-10) ^ 1.5
        return np.maximum((a[:, None] - b[None, :]) ** 2, 1e-10) ** 1.5

    lhs = np.zeros((n + 2, n + 2))
    lhs[:n, :n] = phi(x, x)
    lhs[:n, n], lhs[:n, n + 1] = x, 1.0
    lhs[n, :n], lhs[n + 1, :n] = x, 1.0
    rhs = np.zeros((n + 2, n))
    rhs[:n] = np.eye(n)
    coef = np.linalg.solve(lhs, rhs)  # [n + 2, n]: spline weights and the linear term per table row
    evaluate = np.concatenate([phi(q, x), q[:, None], np.ones((size, 1))], axis=1)
    return torch.from_numpy(evaluate @ coef)


def resample_table(table: torch.Tensor, size: int, method: str = "spline") -> torch.Tensor:
    """Resample a ``[n, D]`` position table to ``[size, D]`` along its first axis.

    ``method="spline"`` (default, official): the order-3 spline of :func:`spline_matrix`,
    differentiable (a fixed matrix times the table). ``"bicubic"``: bicubic interpolation with
    ``align_corners=False`` (this package's earlier rule; centre aligned, so it differs from the
    official one by up to the table's own scale, e.g. 8 -> 1 frames for still images).
    An axis whose size does not change is used as is.
    """
    n, d = table.shape
    if size == n:
        return table
    if method == "spline":
        if n == 1:
            return table.expand(size, d)
        dt = torch.float64 if table.dtype == torch.float64 else torch.float32
        return (spline_matrix(n, size).to(device=table.device, dtype=dt) @ table.to(dt)).to(table.dtype)
    if method != "bicubic":
        raise ValueError(f"position resampling must be one of {RESAMPLE_METHODS}, got {method!r}")
    grid = table.t().reshape(1, d, n, 1)
    out = F.interpolate(grid.float(), size=(size, 1), mode="bicubic", align_corners=False)
    return out.reshape(d, size).t().to(table.dtype)


def _trunc_normal_table(n: int, d: int) -> nn.Parameter:
    table = torch.empty(n, d)
    std = d**-0.5
    nn.init.trunc_normal_(table, std=std, a=-2 * std, b=2 * std)
    return nn.Parameter(table)


def num_kept(num_tokens: int, drop_rate: float, table_tokens: int | None = None) -> int:
    """Tokens DropToken keeps.

    ``table_tokens`` given (default rule ``"table"``, official): the count is fixed by the size
    of the position table, ``int((1 - rate) * table_tokens)``, and at most every token there is:
    784 of 1568 at the paper geometry, 784 of 3200 at a 320 crop, all 196 of a still image.
    ``table_tokens=None`` (rule ``"tokens"``, this package's earlier rule): half of the actual
    tokens, ``int((1 - rate) * num_tokens)`` (1600 of 3200 at a 320 crop, 98 of an image).
    """
    if table_tokens is None:
        return max(1, int((1.0 - drop_rate) * num_tokens + 1e-6))
    return max(1, min(num_tokens, int((1.0 - drop_rate) * table_tokens + 1e-6)))


def keep_indices(batch: int, num_tokens: int, drop_rate: float, per_sample: bool = False,
                 device: torch.device | str | None = None, table_tokens: int | None = None) -> torch.Tensor | None:
    """Indices of the tokens DropToken keeps: ``[k]`` shared by the batch (official: one random
    permutation for the whole batch) or ``[B, k]`` with ``per_sample``; None when nothing drops.
    ``k`` is :func:`num_kept` (official rule with ``table_tokens``).
    """
    if drop_rate <= 0.0:
        return None
    k = num_kept(num_tokens, drop_rate, table_tokens)
    if k >= num_tokens:
        return None
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
        resample: how a table is resized to another grid: ``"spline"`` (official) or ``"bicubic"``.
    """

    def __init__(self, grid: tuple[int, int, int], width: int, dropout: float = 0.1, eps: float = 1e-6,
                 resample: str = "spline"):
        super().__init__()
        self.temporal = _trunc_normal_table(grid[0], width)
        self.vertical = _trunc_normal_table(grid[1], width)
        self.horizontal = _trunc_normal_table(grid[2], width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.resample = resample

    @property
    def table_tokens(self) -> int:
        """Positions the tables describe (t*h*w), which sets the official DropToken count."""
        return self.temporal.shape[0] * self.vertical.shape[0] * self.horizontal.shape[0]

    def embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The position embedding ``[t*h*w, D]`` for a token grid (resampled if needed)."""
        t, h, w = grid
        pos = (
            resample_table(self.temporal, t, self.resample)[:, None, None]
            + resample_table(self.vertical, h, self.resample)[None, :, None]
            + resample_table(self.horizontal, w, self.resample)[None, None, :]
        )
        return self.norm(pos.reshape(t * h * w, -1))

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int], idx: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, t*h*w, D] (or the kept tokens ``idx`` of that grid) -> same shape."""
        return self.drop(x + take_tokens(self.embedding(grid), idx).to(x.dtype))


class TemporalPositions(nn.Module):
    """One learned table (audio: 1200 positions; modality-agnostic text: 16), LayerNorm, add, dropout."""

    def __init__(self, length: int, width: int, dropout: float = 0.1, eps: float = 1e-6, resample: str = "spline"):
        super().__init__()
        self.table = _trunc_normal_table(length, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.resample = resample

    @property
    def table_tokens(self) -> int:
        return self.table.shape[0]

    def forward(self, x: torch.Tensor, num_tokens: int | None = None, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, N, D] (or the kept tokens ``idx`` of ``num_tokens``) -> same shape; the
        table is resampled when ``N`` differs from its length."""
        pos = self.norm(resample_table(self.table, num_tokens or x.shape[1], self.resample))
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


class _Tokenizer(nn.Module):
    """Shared DropToken / projection / position logic of the video and audio tokenizers."""

    positions: nn.Module | None
    keep_rule: str

    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, object]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, drop_rate: float = 0.0, per_sample: bool = False,
                project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                positions: nn.Module | None = None) -> torch.Tensor:
        """Tokens ``[B, N (or kept), D]``.

        Args:
            drop_rate: DropToken rate (> 0 keeps a random subset; see :func:`num_kept`).
            per_sample: each sample keeps its own subset instead of one for the batch.
            project: applied to the projected tokens before positions are added (the
                modality-agnostic model's and agnostic fine-tunes' pre-projection).
            positions: the position module to add (default: this tokenizer's own; a tokenizer
                built ``with_positions=False`` and given none returns tokens without positions).
        """
        raw, where = self._raw(x)
        positions = positions if positions is not None else self.positions
        table = getattr(positions, "table_tokens", None) if self.keep_rule == "table" else None
        idx = keep_indices(raw.shape[0], raw.shape[1], drop_rate, per_sample, x.device, table)
        tokens = self.proj(take_tokens(raw, idx))
        if project is not None:
            tokens = project(tokens)
        return tokens if positions is None else positions(tokens, where, idx)


class VideoTokenizer(_Tokenizer):
    """Voxels -> tokens with positions. ``[B, T, H, W, 3]`` -> ``[B, t*h*w (or kept), D]``.

    Args:
        patch_size: voxel ``(pt, ph, pw)``, e.g. (4, 16, 16).
        grid: position table sizes, e.g. (8, 14, 14) for 32x224x224 clips.
        width: output width ``D``.
        with_positions: False builds no position tables (the modality-agnostic model owns them
            and passes them to :meth:`forward`).
        resample: position-table resizing for other grids, ``"spline"`` (official) or ``"bicubic"``.
        keep_rule: DropToken count, ``"table"`` (official) or ``"tokens"`` (see :func:`num_kept`).

    The projection is the official Conv3d (kernel = stride = voxel) as a Linear over voxels
    flattened in (t, h, w, channel) order (a Conv3d kernel ``[D, 3, pt, ph, pw]`` maps to it by
    ``kernel.permute(0, 2, 3, 4, 1).reshape(D, -1)``); Glorot-uniform with the Conv3d's fans.
    """

    def __init__(self, patch_size, grid, width: int, dropout: float = 0.1, eps: float = 1e-6,
                 with_positions: bool = True, resample: str = "spline", keep_rule: str = "table"):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.keep_rule = keep_rule
        voxel = self.patch_size[0] * self.patch_size[1] * self.patch_size[2] * 3
        self.proj = nn.Linear(voxel, width)
        _init_patch_projection(self.proj, voxel // 3)
        self.positions = (SpatioTemporalPositions(tuple(grid), width, dropout, eps, resample)
                          if with_positions else None)

    def _raw(self, video: torch.Tensor):
        return video_patches(video, self.patch_size)


class AudioTokenizer(_Tokenizer):
    """Waveform patches -> tokens with positions. ``[B, S]`` -> ``[B, S / patch (or kept), D]``.

    The projection is the official Conv1d (kernel = stride = patch) as a Linear over patches.
    Arguments as :class:`VideoTokenizer`.
    """

    def __init__(self, patch_size: int, length: int, width: int, dropout: float = 0.1, eps: float = 1e-6,
                 with_positions: bool = True, resample: str = "spline", keep_rule: str = "table"):
        super().__init__()
        self.patch_size = patch_size
        self.keep_rule = keep_rule
        self.proj = nn.Linear(patch_size, width)
        _init_patch_projection(self.proj, patch_size)
        self.positions = TemporalPositions(length, width, dropout, eps, resample) if with_positions else None

    def patches(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` -> ``[B, S / patch, patch]`` (a view, no copy)."""
        return audio.reshape(audio.shape[0], -1, self.patch_size)

    def _raw(self, audio: torch.Tensor):
        patches = self.patches(audio)
        return patches, patches.shape[1]
