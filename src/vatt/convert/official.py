"""Convert the official TensorFlow VATT checkpoints (google-research ``vatt/``) to vatt models.

Usage::

    from vatt.convert import from_official
    model = from_official("vatt_mbs/ckpt-500000", preset="mbs", vocab="howto100m_en.txt", out="vatt-mbs")

or ``vatt convert official CKPT --preset mbs --vocab howto100m_en.txt --out vatt-mbs``.

What is read (key layout of ``tf.train.Checkpoint(model=<functional Keras model>, optimizer=...)``;
the names are the official attribute paths, as the official ``restore.py`` expects them):

* model variables ``model/layer_with_weights-0/<path>/.ATTRIBUTES/VARIABLE_VALUE`` with ``<path>``
  - modality-specific pretraining (BBS/MBS/LBS, ``TX_FAC``): ``_base_layer/vid_backbone/_base/...``,
    ``_base_layer/aud_backbone/_base/...``, ``_base_layer/txt_backbone/...``, and the FAC heads
    ``_head_layer/_bridge_heads/0/...``;
  - modality-agnostic pretraining (UT-Medium, ``UT_FAC``): ``_base_layer/unified_backbone/
    unified_transformer/...`` and the FAC heads;
  - fine-tuned classifiers (video: K400/K600/K700/MiT; audio: AudioSet): ``_base/...`` (the
    same sub-paths as a pretraining tower's ``_base``), ``_ops/cls/{kernel,bias}``, and for
    fine-tunes of the modality-agnostic model ``_base/pre_proj`` and ``_base/post_proj`` (held by
    the tower's ``pre_proj`` / ``post_proj``).
* skipped on purpose: ``_CHECKPOINTABLE_OBJECT_GRAPH``, ``save_counter``, ``optimizer/*`` and every
  ``.../.OPTIMIZER_SLOT/...``. Anything else, and any model variable that maps to nothing or is
  missing, is an error that names it.

Transposes: a Keras Dense kernel ``[in, out]`` is our ``Linear.weight [out, in]``; the patch
convolutions ``[pt, ph, pw, 3, D]`` / ``[128, 1, D]`` flatten to ``[voxel, D]`` in our (t, h, w, c)
voxel order and transpose; BatchNorm ``gamma/beta/moving_mean/moving_variance`` are
``weight/bias/running_mean/running_var``; LayerNorm ``gamma/beta`` are ``weight/bias``.

Sizes come from the checkpoint's shapes (widths, layers, MLP sizes, position tables, vocabulary,
head sizes, classes); the number of attention heads cannot be seen in the shapes of
video/audio/shared encoders and is taken as width / 64 (the official head size in every
released model) unless ``overrides`` say otherwise. A fine-tuned classifier becomes a full vatt
model whose classification tower holds the official weights and whose other towers (and
common-space heads) keep a fresh random initialisation: use it for classification and features
of that modality only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..atomic_io import atomic_write_json
from ..config import ModelConfig, get_config
from ..errors import CheckpointError, ConfigError, InputError, nearest
from .tensor_bundle import TensorBundle

log = logging.getLogger(__name__)

PREFIX = "model/layer_with_weights-0/"
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
PRESETS = ("bbs", "mbs", "lbs", "ma-medium")
LAYOUTS = ("pretrain", "pretrain-agnostic", "video-classifier", "audio-classifier")
CONVERSION_FILE = "conversion.json"


def is_skipped(key: str) -> bool:
    """Checkpoint entries that are not model weights: the object graph, the save counter, the
    optimizer's own variables and every optimizer slot."""
    return (
        key == "_CHECKPOINTABLE_OBJECT_GRAPH"
        or key.startswith("save_counter/")
        or key.startswith("optimizer/")
        or "/.OPTIMIZER_SLOT/" in key
    )


def model_variables(keys) -> dict[str, str]:
    """``{official attribute path: checkpoint key}`` of the model weights; other entries that are
    not skipped on purpose raise :class:`CheckpointError` naming them."""
    out = {}
    for key in keys:
        if is_skipped(key):
            continue
        if not (key.startswith(PREFIX) and key.endswith(SUFFIX)):
            raise CheckpointError(f"unexpected checkpoint entry {key!r}: not a model weight "
                                  f"({PREFIX}...{SUFFIX}) nor an optimizer/bookkeeping entry")
        out[key[len(PREFIX): -len(SUFFIX)]] = key
    if not out:
        raise CheckpointError(f"no model weights ({PREFIX}...) in this checkpoint: is it an official VATT checkpoint?")
    return out


def detect_layout(paths) -> str:
    """Which official model wrote the checkpoint (one of :data:`LAYOUTS`)."""
    paths = set(paths)
    if any(p.startswith("_base_layer/unified_backbone/") for p in paths):
        return "pretrain-agnostic"
    if any(p.startswith("_base_layer/") for p in paths):
        return "pretrain"
    if "_base/voxel_to_patch/kernel" in paths:
        return "video-classifier"
    if "_base/wave_to_patch/kernel" in paths:
        return "audio-classifier"
    raise CheckpointError("not an official VATT checkpoint: no _base_layer/ (pretraining) nor "
                          "_base/voxel_to_patch or _base/wave_to_patch (fine-tuned classifier) weights")


# -- key mapping -----------------------------------------------------------------------------------
# (official sub-path regex, our sub-key template, transform). Transforms: "" copy, "T" Dense kernel
# transpose, "conv" patch-convolution kernel -> Linear weight.
_LEAF = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}

_ENCODER = [  # official TransformerEncoder under ``tx/`` -> our TransformerEncoder
    (r"tx/layers/(\d+)/layer_norm/(gamma|beta)", "encoder.blocks.{0}.norm1.{leaf1}", ""),
    (r"tx/layers/(\d+)/mha/([qkvo])/kernel", "encoder.blocks.{0}.attn.{1}.weight", "T"),
    (r"tx/layers/(\d+)/mha/([qkvo])/bias", "encoder.blocks.{0}.attn.{1}.bias", ""),
    (r"tx/layers/(\d+)/feed_forward/layer_norm/(gamma|beta)", "encoder.blocks.{0}.norm2.{leaf1}", ""),
    (r"tx/layers/(\d+)/feed_forward/mlp/wi/kernel", "encoder.blocks.{0}.mlp.fc1.weight", "T"),
    (r"tx/layers/(\d+)/feed_forward/mlp/wi/bias", "encoder.blocks.{0}.mlp.fc1.bias", ""),
    (r"tx/layers/(\d+)/feed_forward/mlp/wo/kernel", "encoder.blocks.{0}.mlp.fc2.weight", "T"),
    (r"tx/layers/(\d+)/feed_forward/mlp/wo/bias", "encoder.blocks.{0}.mlp.fc2.bias", ""),
    (r"tx/final_layer_norm/(gamma|beta)", "encoder.norm.{leaf0}", ""),
]
_TOWER = [  # ViTx3D / AuTx1D ``_base`` -> VideoTransformer / AudioTransformer
    (r"agg_embedding", "agg", ""),
    (r"(?:voxel_to_patch|wave_to_patch)/kernel", "tokenizer.proj.weight", "conv"),
    (r"(?:voxel_to_patch|wave_to_patch)/bias", "tokenizer.proj.bias", ""),
    (r"pos_embedding_lookup/(temporal|vertical|horizontal)_position_embeddings/embeddings",
     "tokenizer.positions.{pos0}", ""),
    (r"pos_embedding_lookup/layernorm/(gamma|beta)", "tokenizer.positions.norm.{leaf0}", ""),
    (r"(pre_proj|post_proj)/kernel", "{0}.weight", "T"),
    (r"(pre_proj|post_proj)/bias", "{0}.bias", ""),
] + _ENCODER
_TEXT = [  # LanguageModel + T5 encoder -> TextTransformer
    (r"agg_embedding", "agg", ""),
    (r"embedding/embeddings", "words.weight", ""),
    (r"pre_proj/kernel", "proj.weight", "T"),
    (r"base_lm/layers/(\d+)/self_attention/layer_norm/weight", "blocks.{0}.norm1.weight", ""),
    (r"base_lm/layers/(\d+)/self_attention/attention/([qkvo])/kernel", "blocks.{0}.attn.{1}.weight", "T"),
    (r"base_lm/layers/0/self_attention/attention/relative_attention_bias/embeddings", "relative_bias.embedding.weight", ""),
    (r"base_lm/layers/(\d+)/feed_forward/layer_norm/(gamma|beta)", "blocks.{0}.norm2.{leaf1}", ""),
    (r"base_lm/layers/(\d+)/feed_forward/mlp/wi/kernel", "blocks.{0}.mlp.fc1.weight", "T"),
    (r"base_lm/layers/(\d+)/feed_forward/mlp/wo/kernel", "blocks.{0}.mlp.fc2.weight", "T"),
    (r"base_lm/final_layer_norm/weight", "norm.weight", ""),
]
_MODALITY = {"video": "video", "audio": "audio", "text": "text", "vid": "video", "aud": "audio", "txt": "text"}
_UNIFIED = [  # UniversalVATT -> ModalityAgnosticTransformer (``backbone.``)
    (r"(vid|aud|txt)_agg_embedding", "{mod0}.agg", ""),
    (r"raw_to_embeddings/(video|audio)/kernel", "{mod0}.embed.proj.weight", "conv"),
    (r"raw_to_embeddings/(video|audio)/bias", "{mod0}.embed.proj.bias", ""),
    (r"raw_to_embeddings/text/embeddings", "text.embed.weight", ""),
    (r"(pre_proj|post_proj)/(video|audio|text)/kernel", "{mod1}.{0}.weight", "T"),
    (r"(pre_proj|post_proj)/(video|audio|text)/bias", "{mod1}.{0}.bias", ""),
    (r"pos_embedding_lookup/video/(temporal|vertical|horizontal)_position_embeddings/embeddings",
     "video.positions.{0}", ""),
    (r"pos_embedding_lookup/(audio|text)/temporal_position_embeddings/embeddings", "{0}.positions.table", ""),
    (r"pos_embedding_lookup/(video|audio|text)/layernorm/(gamma|beta)", "{0}.positions.norm.{leaf1}", ""),
] + _ENCODER
_HEADS = [  # FAC bridge heads (official BN placement) -> CommonSpaceHeads
    (r"vid_to_hid/kernel", "video_va1.linear.weight", "T"),
    (r"hid_to_va/pre_bn/(gamma|beta|moving_mean|moving_variance)", "video_va1.bn.{leaf0}", ""),
    (r"hid_to_va/dense/kernel", "video_va2.linear.weight", "T"),
    (r"hid_to_va/bn/(gamma|beta|moving_mean|moving_variance)", "video_va2.bn.{leaf0}", ""),
    (r"va_to_vat/dense/kernel", "video_vt.linear.weight", "T"),
    (r"va_to_vat/bn/(gamma|beta|moving_mean|moving_variance)", "video_vt.bn.{leaf0}", ""),
    (r"aud_to_va/kernel", "audio_va.weight", "T"),
    (r"aud_to_va/bias", "audio_va.bias", ""),
    (r"txt_to_vat/kernel", "text_vt.weight", "T"),
    (r"txt_to_vat/bias", "text_vt.bias", ""),
]
_CLASSIFIER = [(r"kernel", "weight", "T"), (r"bias", "bias", "")]


def _apply_rules(rules, sub: str, modality: str = "") -> tuple[str, str] | None:
    for pattern, template, transform in rules:
        m = re.fullmatch(pattern, sub)
        if m is None:
            continue
        g = m.groups()
        fields = {f"leaf{i}": _LEAF.get(x, x) for i, x in enumerate(g)}
        fields.update({f"mod{i}": _MODALITY.get(x, x) for i, x in enumerate(g)})
        pos = {"temporal": "table" if modality == "audio" else "temporal"}
        fields.update({f"pos{i}": pos.get(x, x) for i, x in enumerate(g)})
        return template.format(*g, **fields), transform
    return None


def map_key(path: str, layout: str) -> tuple[str, str] | None:
    """Our state-dict key and transform for an official attribute ``path``; None if it maps to
    nothing."""
    routes: list[tuple[str, str, list, str]] = []
    if layout == "pretrain":
        routes = [("_base_layer/vid_backbone/_base/", "video_backbone.", _TOWER, "video"),
                  ("_base_layer/aud_backbone/_base/", "audio_backbone.", _TOWER, "audio"),
                  ("_base_layer/txt_backbone/", "text_backbone.", _TEXT, "text")]
    elif layout == "pretrain-agnostic":
        routes = [("_base_layer/unified_backbone/unified_transformer/", "backbone.", _UNIFIED, "")]
    else:
        modality = layout.split("-")[0]
        routes = [("_base/", f"{modality}_backbone.", _TOWER, modality), ("_ops/cls/", "classifier.", _CLASSIFIER, "")]
    if layout.startswith("pretrain"):
        routes.append(("_head_layer/_bridge_heads/0/", "heads.", _HEADS, ""))
    for prefix, ours, rules, modality in routes:
        if path.startswith(prefix):
            hit = _apply_rules(rules, path[len(prefix):], modality)
            if hit is not None:
                return ours + hit[0], hit[1]
    return None


def transform(array: np.ndarray, how: str) -> np.ndarray:
    if how == "T":
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D Dense kernel, got shape {list(array.shape)}")
        return array.T
    if how == "conv":  # [pt, ph, pw, C, D] or [k, C, D] -> [D, voxel]
        return array.reshape(-1, array.shape[-1]).T
    return array


def _out_shape(shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    if how == "T" and len(shape) == 2:
        return (shape[1], shape[0])
    if how == "conv":
        return (shape[-1], int(np.prod(shape[:-1])))
    return tuple(shape)


# -- sizes from shapes -----------------------------------------------------------------------------
def _layers(shapes: Mapping[str, tuple], prefix: str, inner: str = "tx/layers/") -> int:
    pat = re.compile(re.escape(prefix + inner) + r"(\d+)/")
    found = {int(m.group(1)) for p in shapes for m in [pat.match(p)] if m}
    return max(found) + 1 if found else 0


RELEASED_WIDTHS = (768, 1024)  # official head size 64 in every released video/audio/UT encoder


def _encoder(shapes, prefix: str, width: int) -> dict:
    layers = _layers(shapes, prefix)
    mlp = shapes.get(prefix + "tx/layers/0/feed_forward/mlp/wi/kernel", (width, 4 * width))[1]
    return {"num_layers": layers, "width": width, "mlp_dim": mlp, "num_heads": max(1, width // 64)}


def _need(shapes, path: str) -> tuple[int, ...]:
    if path not in shapes:
        raise CheckpointError(f"missing model variable {path!r} in the checkpoint")
    return shapes[path]


def infer_overrides(shapes: Mapping[str, tuple], layout: str) -> dict[str, Any]:
    """Config values read off the checkpoint's shapes (see the module docstring)."""
    o: dict[str, Any] = {}

    def tower(prefix: str, modality: str) -> None:
        agg = _need(shapes, prefix + "agg_embedding")[0]
        enc = _encoder(shapes, prefix, agg)
        if modality == "video":
            pt, ph, pw, _, _ = _need(shapes, prefix + "voxel_to_patch/kernel")
            t = _need(shapes, prefix + "pos_embedding_lookup/temporal_position_embeddings/embeddings")[0]
            h = _need(shapes, prefix + "pos_embedding_lookup/vertical_position_embeddings/embeddings")[0]
            o.update({"video.patch_size": [pt, ph, pw], "video.num_frames": t * pt, "video.crop_size": h * ph})
        else:
            k = _need(shapes, prefix + "wave_to_patch/kernel")[0]
            n = _need(shapes, prefix + "pos_embedding_lookup/temporal_position_embeddings/embeddings")[0]
            o.update({"audio.patch_size": k, "audio.num_samples": n * k})
        o[f"{modality}_encoder"] = enc
        o[f"{modality}.pre_proj"] = prefix + "pre_proj/kernel" in shapes
        o[f"{modality}.post_proj_dim"] = shapes[prefix + "post_proj/kernel"][1] if prefix + "post_proj/kernel" in shapes else 0

    heads = "_head_layer/_bridge_heads/0/"
    if layout == "pretrain":
        tower("_base_layer/vid_backbone/_base/", "video")
        tower("_base_layer/aud_backbone/_base/", "audio")
        t = "_base_layer/txt_backbone/"
        vocab, word_dim = _need(shapes, t + "embedding/embeddings")
        buckets, nheads = _need(shapes, t + "base_lm/layers/0/self_attention/attention/relative_attention_bias/embeddings")
        width = _need(shapes, t + "pre_proj/kernel")[1]
        o["text_encoder"] = {"num_layers": _layers(shapes, t, "base_lm/layers/"), "width": width,
                             "mlp_dim": _need(shapes, t + "base_lm/layers/0/feed_forward/mlp/wi/kernel")[1],
                             "num_heads": nheads}
        o.update({"text.vocab_size": vocab, "text.word_dim": word_dim, "text.num_buckets": buckets})
    elif layout == "pretrain-agnostic":
        u = "_base_layer/unified_backbone/unified_transformer/"
        width = _need(shapes, u + "vid_agg_embedding")[0]
        o["shared_encoder"] = _encoder(shapes, u, width)
        o["post_proj_dim"] = _need(shapes, u + "post_proj/video/kernel")[1]
        pt, ph, pw, _, _ = _need(shapes, u + "raw_to_embeddings/video/kernel")
        p = u + "pos_embedding_lookup/"
        t = _need(shapes, p + "video/temporal_position_embeddings/embeddings")[0]
        h = _need(shapes, p + "video/vertical_position_embeddings/embeddings")[0]
        k = _need(shapes, u + "raw_to_embeddings/audio/kernel")[0]
        n = _need(shapes, p + "audio/temporal_position_embeddings/embeddings")[0]
        vocab, word_dim = _need(shapes, u + "raw_to_embeddings/text/embeddings")
        o.update({"video.patch_size": [pt, ph, pw], "video.num_frames": t * pt, "video.crop_size": h * ph,
                  "audio.patch_size": k, "audio.num_samples": n * k, "text.vocab_size": vocab,
                  "text.word_dim": word_dim,
                  "text.max_words": _need(shapes, p + "text/temporal_position_embeddings/embeddings")[0]})
    else:
        modality = layout.split("-")[0]
        tower("_base/", modality)
        num_classes = _need(shapes, "_ops/cls/kernel")[1]
        # Official audio fine-tuning (AudioSet) is multi-label with sigmoids; video uses a softmax.
        o["classifier"] = {"modality": modality, "num_classes": num_classes, "multilabel": modality == "audio"}
    if layout.startswith("pretrain"):
        o["heads.va_dim"] = _need(shapes, heads + "aud_to_va/kernel")[1]
        o["heads.vt_dim"] = _need(shapes, heads + "txt_to_vat/kernel")[1]
        o["heads.bn_placement"] = "official"
    return o


def _flat(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in overrides.items():
        if isinstance(v, Mapping) and k not in ("classifier",):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def build_config(shapes: Mapping[str, tuple], layout: str, preset: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """The model config of a checkpoint: ``preset`` (inferred when None), the sizes read off
    ``shapes``, then ``overrides`` (dotted keys, e.g. ``{"video_encoder.num_heads": 4}``)."""
    inferred = infer_overrides(shapes, layout)
    if preset is None:
        preset = _guess_preset(inferred, layout)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} for an official checkpoint{nearest(str(preset), PRESETS)}")
    if layout == "pretrain-agnostic" and preset != "ma-medium":
        raise ConfigError(f"this is a modality-agnostic (UT) checkpoint; use --preset ma-medium, not {preset}")
    if layout == "pretrain" and preset == "ma-medium":
        raise ConfigError("this is a modality-specific (BBS/MBS/LBS) checkpoint; --preset ma-medium does not fit it")
    base = "mbs" if preset == "ma-medium" and not layout.startswith("pretrain") else preset
    values = _flat(inferred)
    given = dict(overrides or {})
    for key in ("video_encoder", "audio_encoder", "shared_encoder"):
        width = values.get(f"{key}.width")
        if width is not None and width not in RELEASED_WIDTHS and f"{key}.num_heads" not in given:
            log.warning("%s width %d is not a released size: its head count cannot be read from the checkpoint "
                        "and is taken as width / 64 = %d; set the right one with --set %s.num_heads=N",
                        key, width, values[f"{key}.num_heads"], key)
    values.update(given)
    cfg = get_config(base, {k: v for k, v in values.items() if k != "classifier"})
    if "classifier" in values:
        cfg = cfg.override({"classifier": values["classifier"]})
    cfg.text.trainable_word_table = False  # official: a frozen word table
    cfg.name = f"official-{preset}" if layout.startswith("pretrain") else f"official-{preset}-{layout}"
    cfg.check()
    return cfg


def _guess_preset(inferred: dict, layout: str) -> str:
    if layout == "pretrain-agnostic":
        return "ma-medium"
    video = inferred.get("video_encoder")
    if video is None:
        return "mbs"
    if video["width"] == 768:
        return "bbs"
    return "lbs" if video["num_layers"] >= 24 else "mbs"


# -- conversion ------------------------------------------------------------------------------------
def convert_state(arrays: Mapping[str, Callable[[], np.ndarray] | np.ndarray], shapes: Mapping[str, tuple],
                  layout: str, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map official variables onto ``model``'s state dict.

    Returns ``(state, filled)``: the converted tensors and our keys they fill. Raises
    :class:`CheckpointError` naming the first official variable that maps to nothing, maps to a
    tensor of another shape, or maps twice, and the first of our tensors in a converted part that
    no variable fills.
    """
    ours = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for path in sorted(shapes):
        hit = map_key(path, layout)
        if hit is None or hit[0] not in ours:
            raise CheckpointError(f"checkpoint variable {path!r} has no place in a vatt {layout} model "
                                  "(an extra variable, or another model variant)")
        key, how = hit
        if key in source:
            raise CheckpointError(f"checkpoint variables {source[key]!r} and {path!r} both map to {key}")
        want = tuple(ours[key].shape)
        got = _out_shape(tuple(shapes[path]), how)
        if got != want:
            raise CheckpointError(f"checkpoint variable {path!r} has shape {list(shapes[path])}, but the model "
                                  f"built from its config needs {list(want)} for {key} (a mis-shaped variable, "
                                  "or a size to set with --set)")
        value = arrays[path]
        value = value() if callable(value) else value
        state[key] = torch.from_numpy(np.ascontiguousarray(transform(value, how))).to(ours[key].dtype)
        source[key] = path
    parts = _converted_parts(layout)
    missing = [k for k in ours if k.startswith(parts) and k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"the checkpoint has no variable for {missing[0]}"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                              + ": a missing variable, or a checkpoint of another model variant")
    return state, sorted(state)


def _converted_parts(layout: str) -> tuple[str, ...]:
    if layout == "pretrain":
        return ("video_backbone.", "audio_backbone.", "text_backbone.", "heads.")
    if layout == "pretrain-agnostic":
        return ("backbone.", "heads.")
    return (f"{layout.split('-')[0]}_backbone.", "classifier.")


def from_official(ckpt: str | os.PathLike, preset: str | None = None, vocab: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                  verify_data: bool | None = None):
    """Convert an official VATT TensorFlow checkpoint into a :class:`vatt.VATT` (eval mode).

    Args:
        ckpt: the checkpoint prefix (``.../ckpt-500000``), its ``.index`` file, or its folder.
        preset: ``"bbs"``, ``"mbs"``, ``"lbs"`` or ``"ma-medium"`` (inferred from the shapes when None;
            for a fine-tuned classifier it sets the sizes of the towers the checkpoint lacks).
        vocab: the official vocabulary text file (``word`` or ``idx word`` lines), used to
            tokenise strings exactly as the official code does.
        out: write a model directory there (``config.json``, ``model.safetensors``,
            ``vocab.json`` with a vocabulary, and ``conversion.json``: what was read and skipped).
        overrides: config values to set, dotted keys (``{"video_encoder.num_heads": 4}``).
        verify_data: check tensor CRC32Cs (see :class:`~vatt.convert.tensor_bundle.TensorBundle`).
    """
    from ..model import VATT
    from ..text import OfficialWordTokenizer

    bundle = TensorBundle(ckpt, verify_data=verify_data)
    variables = model_variables(bundle.names())
    layout = detect_layout(variables)
    shapes = {p: bundle.entry(k).shape for p, k in variables.items()}
    cfg = build_config(shapes, layout, preset, overrides)
    tokenizer = OfficialWordTokenizer.from_file(vocab) if vocab is not None else None
    if tokenizer is not None and len(tokenizer) > cfg.text.vocab_size:
        raise InputError(f"the vocabulary has {len(tokenizer)} words but the checkpoint's word table has "
                         f"{cfg.text.vocab_size} rows: is it the right vocabulary file?")
    full = layout.startswith("pretrain")
    if full:
        with torch.device("meta"):  # every tensor comes from the checkpoint
            model = VATT(cfg, tokenizer)
    else:
        model = VATT(cfg, tokenizer)  # the towers the classifier lacks keep a fresh init
    arrays = {p: (lambda k=k: bundle.read(k)) for p, k in variables.items()}
    state, filled = convert_state(arrays, shapes, layout, model)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    model.load_state_dict(state, strict=full, assign=full)
    model.word_table.weight.requires_grad_(False)
    model.eval()
    skipped = len(bundle.entries) - len(variables)
    log.info("converted %s (%s): %d model variables, %d optimizer/bookkeeping entries skipped",
             bundle.prefix, layout, len(variables), skipped)
    if not full:
        log.warning("a fine-tuned %s classifier: only its tower and classification head hold official weights; "
                    "the other towers and the common-space heads are freshly initialised", layout.split("-")[0])
    if tokenizer is None and full:
        log.warning("no --vocab: the model will take word ids but cannot tokenise strings (the official "
                    "vocabulary file is not in the checkpoint)")
    if out is not None:
        out = Path(out)
        model.save_pretrained(out)
        atomic_write_json(out / CONVERSION_FILE, {
            "format": "vatt-conversion", "source": str(bundle.prefix), "layout": layout,
            "preset": cfg.name, "model_variables": len(variables), "skipped_entries": skipped,
            "converted": _converted_parts(layout), "tensors_filled": len(filled),
            "vocabulary": str(vocab) if vocab is not None else None,
        })
    return model


def read_case_overrides(case_json: str | os.PathLike) -> dict[str, Any]:
    """Config overrides that an official config (a fixture's ``case.json`` ``official_config``)
    implies but the checkpoint shapes cannot show: the attention head counts."""
    data = json.loads(Path(case_json).read_text(encoding="utf-8"))
    cfg = data.get("official_config", {})
    out = {}
    for name, key in (("vit", "video_encoder"), ("wat", "audio_encoder"), ("ut", "shared_encoder")):
        for section, values in cfg.items():
            if section.startswith(name) and isinstance(values, dict) and "num_heads" in values:
                out[f"{key}.num_heads"] = values["num_heads"]
    return out
