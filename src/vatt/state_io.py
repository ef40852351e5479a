"""The one serialiser of nested states (optimizer, RNG, schedules) without pickle: tensors go to a
safetensors file and everything else (dicts, lists, numbers, strings) to a JSON skeleton that names
them. Used by training checkpoints (:mod:`vatt.train.checkpoint`) and fine-tuning checkpoints
(:mod:`vatt.train.finetune`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .atomic_io import atomic_write_json, atomic_write_safetensors
from .errors import CheckpointError


# -- nested state <-> (tensors, JSON) -----------------------------------------------------------
def flatten_state(obj: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "t") -> tuple[Any, dict]:
    """Split a nested state (dicts, lists, tuples, tensors, numbers, strings) into a JSON skeleton
    and a flat ``{name: tensor}`` dict. Tensors become ``{"__tensor__": name}``; dicts with
    non-string keys become ``{"__items__": [[key, value], ...]}``."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        name = f"{prefix}.{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}, tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten_state(v, tensors, prefix)[0] for k, v in obj.items()}, tensors
        return {"__items__": [[k, flatten_state(v, tensors, prefix)[0]] for k, v in obj.items()]}, tensors
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, tensors, prefix)[0] for v in obj], tensors
    if isinstance(obj, np.ndarray):
        return flatten_state(torch.from_numpy(obj.copy()), tensors, prefix)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item(), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise CheckpointError(f"cannot store a {type(obj).__name__} in a checkpoint")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            if skeleton["__tensor__"] not in tensors:
                raise CheckpointError(f"names a tensor {skeleton['__tensor__']!r} that is not in its safetensors file")
            return tensors[skeleton["__tensor__"]]
        if set(skeleton) == {"__items__"}:
            items = skeleton["__items__"]
            if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise CheckpointError("has a malformed '__items__' entry")
            return {k: unflatten_state(v, tensors) for k, v in items}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(directory: Path, name: str, state: Any) -> None:
    """``name.safetensors`` (tensors) + ``name.json`` (skeleton), each written atomically."""
    skeleton, tensors = flatten_state(state)
    atomic_write_safetensors(Path(directory) / f"{name}.safetensors", tensors)
    atomic_write_json(Path(directory) / f"{name}.json", skeleton, indent=None)


def load_state(directory: Path, name: str) -> Any:
    try:
        skeleton = json.loads((Path(directory) / f"{name}.json").read_text(encoding="utf-8"))
        tensors = load_file(str(Path(directory) / f"{name}.safetensors"))
        return unflatten_state(skeleton, tensors)
    except (OSError, ValueError, SafetensorError, CheckpointError, TypeError) as e:
        raise CheckpointError(f"{directory} has an unreadable {name} state: {e}") from None
