"""The one config engine: dataclass configs <-> plain dicts, YAML/JSON files, dotted overrides.

Every config of the package (model, training, data/augmentation, objective, fine-tuning) is a
``@dataclass`` that inherits :class:`ConfigBase` and gets::

    cfg.to_dict() / Cls.from_dict(d)      # nested dataclasses, typed coercion, check() at every level
    cfg.override({"optim.lr": 3e-4})      # dotted keys (or ["optim.lr=3e-4", ...] from --set)
    cfg.save("x.yaml") / Cls.load(path)   # JSON or YAML by suffix; YAML aliases are refused
    cfg.check()                           # each class validates its own values (one-line errors)

Unknown keys anywhere raise :class:`~vatt.errors.ConfigError` naming the nearest valid key.

Why our own and not OmegaConf/dacite (both were considered): we need errors that name the nearest
valid key at any depth (STYLE), YAML 1.1's ``1e-5`` (no dot) read as a number where a float is
expected, group shortcuts (an encoder given by size name), a refusal of YAML aliases (a nine-level
alias bomb under 1 KB expands to billions of nodes), and no extra dependency; it is ~200 lines.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from .atomic_io import atomic_write_text
from .errors import ConfigError, nearest

T = TypeVar("T", bound="ConfigBase")


class ConfigBase:
    """Mixin for config dataclasses (see the module docstring).

    Subclasses may define:
        ``check(self)``: raise ConfigError for values that cannot work (run by ``__post_init__``,
            so nested groups are checked before the group that holds them).
        ``from_name(cls, name) -> ConfigBase`` (classmethod): a group given by name in a dotted
            override or a file, e.g. ``video_encoder: large``.
    """

    def __post_init__(self) -> None:
        self.check()  # every construction is validated: presets, files, overrides, Python calls

    def check(self) -> None:  # pragma: no cover - overridden where there is something to check
        """Raise ConfigError for values that cannot work."""

    # -- dicts ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return build(cls, data)

    def override(self: T, overrides: Mapping[str, Any] | Sequence[str] | None = None, **kwargs: Any) -> T:
        """A copy with dotted-key overrides applied: ``{"optim.lr": 3e-4}``, nested dicts
        (``{"video": {"drop_rate": 0.25}}``) or ``--set`` strings (``["optim.lr=3e-4"]``)."""
        data = self.to_dict()
        for key, value in {**parse_overrides(overrides), **flatten(kwargs)}.items():
            set_dotted(data, type(self), key, value)
        return type(self).from_dict(data)

    # -- files ----------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self, command: str = "") -> str:
        command = command or getattr(self, "command", "")  # configs that record their command line
        head = f"# {command}\n" if command else ""
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike, command: str = "") -> None:
        """Write JSON or YAML (by suffix: .json, anything else YAML) atomically; YAML files start
        with ``# COMMAND`` (``command`` or the config's own ``command`` field; big_vision style)."""
        path = Path(path)
        atomic_write_text(path, self.to_json() if path.suffix == ".json" else self.to_yaml(command))

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        return cls.from_dict(load_mapping(path))


# -- files -----------------------------------------------------------------------------------------
class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: config files never need them, and nested aliases
    expand exponentially (a "billion laughs" bomb)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            raise ConfigError(f"YAML aliases (*{anchor}) are not allowed in config files; write the values out")
        return super().compose_node(parent, index)


def load_mapping(path: str | os.PathLike) -> dict:
    """A config file (JSON by suffix ``.json``, else YAML) as a dict; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        # JSON with json: PyYAML would read JSON's 1e-05 (no dot) as a string.
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path} is not a valid JSON/YAML config: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} should hold a mapping of config keys, got {type(data).__name__}")
    return data


# -- overrides -------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, Any]:
    """``"video.drop_rate=0.25"`` -> ``("video.drop_rate", 0.25)`` (the value is parsed as YAML)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"an override looks like key=value (e.g. video.drop_rate=0.25), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.load(value, Loader=_NoAliasLoader)  # noqa: S506
    except (yaml.YAMLError, ConfigError):
        return key.strip(), value


def parse_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """``--set`` strings or a (nested) mapping -> flat ``{dotted key: value}``."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return flatten(overrides)
    return dict(parse_override(o) for o in overrides)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys, so ``video={"drop_rate": 0.25}`` changes only that field."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        key = str(key).replace("__", ".")  # create_model(**{"video__drop_rate": ...}) style
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# Names other training libraries use for our settings: an unknown key with one of these leaf
# names is pointed at ours (``save_every`` -> ``checkpoint_every``, ``lr`` -> ``optim.lr``).
SYNONYMS = {
    "save_every": "checkpoint_every", "save_steps": "checkpoint_every", "ckpt_every": "checkpoint_every",
    "checkpoint_steps": "checkpoint_every", "max_steps": "steps", "num_steps": "steps", "total_steps": "steps",
    "train_steps": "steps", "iterations": "steps", "learning_rate": "lr", "warmup": "warmup_steps",
    "bs": "batch_size", "workers": "num_workers", "max_grad_norm": "grad_clip", "clip_grad": "grad_clip",
    "gradient_accumulation_steps": "grad_accum", "accumulate_grad_batches": "grad_accum", "dtype": "precision",
    "amp": "precision", "wd": "weight_decay", "log_steps": "log_every", "eval_steps": "eval_every",
}
EPOCH_NAMES = ("epochs", "num_epochs", "max_epochs", "num_train_epochs")


def leaf_keys(cls, prefix: str = "") -> list[str]:
    """Every settable dotted key of config class ``cls`` (groups expanded)."""
    out = []
    for name, tp in field_types(cls).items():
        sub = dataclass_of(tp)
        out += leaf_keys(sub, f"{prefix}{name}.") if sub is not None else [prefix + name]
    return out


def key_hint(bad: str, root: type, level: Sequence[str]) -> str:
    """The hint after an unknown key ``bad`` of config class ``root``: the key of that leaf name
    (or of its usual synonym) in any group; else a close key of the same level; else a key in any
    group whose leaf name is close; else the nearest key of the same level."""
    leaf = bad.rsplit(".", 1)[-1]
    keys = leaf_keys(root)
    if leaf in EPOCH_NAMES and "steps" in keys:
        return " (runs are counted in optimisation steps: set steps=N)"
    want = SYNONYMS.get(leaf, leaf)
    same = [k for k in keys if k.rsplit(".", 1)[-1] == want and k != bad]
    if not same and not difflib.get_close_matches(bad, level, n=1, cutoff=0.6):  # a typo of a leaf in a group
        close = difflib.get_close_matches(leaf, {k.rsplit(".", 1)[-1] for k in keys}, n=1, cutoff=0.75)
        same = [k for k in keys if close and k.rsplit(".", 1)[-1] == close[0]]
    if same:
        return " (did you mean " + " or ".join(f"'{k}'" for k in same[:3]) + "?)"
    return nearest(bad, level)


def set_dotted(data: dict, cls: type, key: str, value: Any) -> None:
    """Set ``key`` (dotted) in the plain dict ``data`` of config class ``cls``; unknown keys name
    the nearest valid one. A group given by name goes through the group class' ``from_name``."""
    parts = key.split(".")
    node: Any = data
    root = cls
    for i, part in enumerate(parts):
        types = field_types(cls)
        path = ".".join(parts[:i])
        if part not in types:
            bad = ".".join(parts[: i + 1])
            valid = [f"{path}.{k}" if path else k for k in types]
            where = f" (in {key!r})" if bad != key else ""
            raise ConfigError(f"unknown config key {bad!r}{key_hint(bad, root, valid)}{where}")
        sub = dataclass_of(types[part])
        if i == len(parts) - 1:
            if sub is not None and isinstance(value, str):
                value = _group_by_name(sub, value, key).to_dict()
            node[part] = value
            return
        if sub is None:
            raise ConfigError(f"config key {'.'.join(parts[: i + 1])!r} is a value, not a group; got {key!r}")
        if not isinstance(node.get(part), dict):  # e.g. shared_encoder.width on a modality-specific model
            node[part] = dataclasses.asdict(sub())
        node, cls = node[part], sub


def _group_by_name(cls, name: str, key: str):
    if not hasattr(cls, "from_name"):
        raise ConfigError(f"{key} is a group of settings, not a value; got {name!r}")
    return cls.from_name(name)


# -- dataclass <-> dict ----------------------------------------------------------------------------
def field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dataclass_of(tp) -> type | None:
    """The dataclass inside ``X`` or ``X | None``, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def build(cls, data: Mapping[str, Any], prefix: str = ""):
    """Instantiate config class ``cls`` from a plain mapping: typed coercion at every level, then
    ``check()`` of every nested group and of ``cls``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config group {prefix.rstrip('.') or 'root'} should be a mapping, got {type(data).__name__}")
    types = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types:
            valid = [prefix + k for k in types]
            hint = key_hint(str(key), cls, valid) if not prefix else nearest(prefix + str(key), valid)
            raise ConfigError(f"unknown config key {prefix + str(key)!r}{hint}")
        kwargs[key] = coerce(types[key], value, prefix + key)
    group = prefix.rstrip(".")
    try:
        return cls(**kwargs)  # ConfigBase.__post_init__ runs check()
    except ConfigError as e:
        if group and not str(e).startswith(group):  # name the group: "video_encoder: width ..."
            raise ConfigError(f"{group}: {e}") from None
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config group {group or cls.__name__}: {e}") from None


def coerce(tp, value, key: str):
    """``value`` as type ``tp`` (dataclass groups, tuples, bool/int/float/str, optionals, lists,
    dicts); a wrong type is a ConfigError naming ``key``."""
    optional = type(None) in typing.get_args(tp)
    if value is None and optional:
        return None
    sub = dataclass_of(tp)
    if sub is not None:
        if isinstance(value, str):
            return _group_by_name(sub, value, key)
        return build(sub, value, key + ".")
    if optional:  # X | None with a value: coerce as X
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} should be a list of {len(args)} values, got {value!r}")
        return tuple(coerce(t, v, key) for t, v in zip(args, value))
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} should be a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} should be a mapping of keys to values, got {value!r}")
        return dict(value)
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


def to_plain(value):
    """Tuples -> lists, recursively (YAML/JSON friendly)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


# -- validation helpers ----------------------------------------------------------------------------
def check_number(value, key: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number in the given range, e.g.
    ``check_number(lr, "optim.lr", low=0, low_open=True)`` for lr > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} should be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"{key} should be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(f"{key} should be {'<' if high_open else '<='} {high:g}, got {value!r}")


def check_choice(value, key: str, choices: Sequence[str]) -> None:
    """Raise ConfigError (naming the nearest choice) unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}"
                          + nearest(str(value), list(choices)))
