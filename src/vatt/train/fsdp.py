"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the large presets: shard the model over the
ranks instead of keeping a DDP replica per rank, and move FULL states in and out of checkpoints.

Sharding: every transformer block of every backbone (``model.transformer_blocks()``) is its own
FSDP unit (its parameters are all-gathered just before its forward / backward and freed after),
then the root unit takes everything else (embeddings, heads with their SyncBatchNorm, the text
relative-position table). Parameters become ``DTensor`` shards (dim 0), so the optimiser must be
built after :func:`shard_model`.

Gradients: FSDP2's reduce-scatter divides the summed gradient by the world size, the same average
over ranks that DDP takes, so the per-rank loss scaling of the loop (and the gradient of
``gather_with_grad``, see :mod:`vatt.distributed`) is unchanged.

Checkpoints stay in the one format every run writes (safetensors + JSON, full tensors): the
states are gathered to full CPU tensors on rank 0 (``get_model_state_dict`` /
``get_optimizer_state_dict`` with ``full_state_dict=True, cpu_offload=True``), and loaded back with
``set_model_state_dict`` / ``set_optimizer_state_dict``. The optimiser state of an FSDP run is
keyed by parameter name (``"video_backbone.encoder.blocks.0.attn.q.weight"``) instead of by position.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

# trainer.json "optimizer_format" of an FSDP checkpoint (absent = positional, torch's own).
OPTIMIZER_FORMAT = "fqn"


def shard_model(model: nn.Module, precision: str = "fp32") -> int:
    """Apply ``fully_shard`` to every transformer block, then to ``model``; returns the block count.

    With ``precision="bf16"`` the blocks compute with bf16 parameters
    (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``: half the all-gather traffic,
    fp32 gradient reduction); the root unit (embeddings, heads, BatchNorm) keeps fp32 parameters
    under the loop's autocast. Activation checkpointing (``model.set_grad_checkpointing()``)
    composes with it: the recompute runs inside the block's FSDP hooks.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ..model.layers import Attention

    # Distributed checkpointing maps state-dict keys to parameters one to one: the fused QKV
    # projection (saved as q/k/v by hooks) is split back before sharding (values unchanged).
    for m in model.modules():
        if isinstance(m, Attention):
            m.fuse_qkv(False)
    kw = {}
    if precision == "bf16":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    blocks = list(model.transformer_blocks())
    for block in blocks:
        fully_shard(block, **kw)
    fully_shard(model)
    return len(blocks)


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_states(model: nn.Module, optimizer: torch.optim.Optimizer | None):
    """Gather the full model (and optimiser) state; collective, call on every rank.

    Returns ``(model_state, optimizer_state)`` as CPU tensors on rank 0; ``({}, {})``-like empty
    states on the other ranks.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    msd = get_model_state_dict(model, options=_options())
    osd = get_optimizer_state_dict(model, optimizer, options=_options()) if optimizer is not None else None
    return msd, osd


def saveable(model: nn.Module, state: dict):
    """Something with the model's ``save_pretrained`` that writes ``state`` (full tensors)."""
    if hasattr(model, "state_from_saved"):  # renames its keys when saving (fine-tuning's Classifier)
        return SimpleNamespace(save_pretrained=lambda d: model.save_pretrained(d, state=state))
    view = SimpleNamespace(state_dict=lambda: state, tokenizer=model.tokenizer, config=model.config)
    return SimpleNamespace(save_pretrained=lambda d: type(model).save_pretrained(view, d))


def load_full_states(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict,
                     optimizer_state: dict | None) -> None:
    """Load full (unsharded) states into a sharded model / its optimiser; every rank passes them."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(model, model_state, options=opts)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)
