"""The full VATT model: backbones + common-space heads, input checks, embedding API, save/load.

Usage::

    model = vatt.create_model("tiny")                      # or "mbs", "ma-medium", ...
    out = model(video=clip, audio=wave, text=ids)         # dict of AGG features and embeddings
    model.save_pretrained("my-model")                      # config.json + model.safetensors (+ vocab.json)
    model = vatt.load_model("my-model")                    # eval mode
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..atomic_io import atomic_write_safetensors, atomic_write_text
from ..config import DEFAULT_PRESET, RUNTIME_FIELDS, ModelConfig, get_config
from ..errors import CheckpointError, ConfigError, InputError, describe_tensor
from ..tagged_json import read_tagged_json
from ..text import WordTokenizer
from .backbones import AudioTransformer, ModalityAgnosticTransformer, TextTransformer, VideoTransformer
from .heads import CommonSpaceHeads, classifier_head

log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE = "config.json", "model.safetensors", "vocab.json"
CHECKPOINT_FORMAT = "vatt-model"
# Inputs may overshoot [-1, 1] slightly after augmentation (e.g. audio noise); 0..255 pixels or
# unscaled int16 audio are far outside.
RANGE_MARGIN = 0.1
MODALITIES = ("video", "audio", "text")
DROPTOKEN_MODALITIES = ("video", "audio")


class _SharedTowerView:
    """One modality's view of the shared (modality-agnostic) backbone, with the interface of a
    per-modality backbone (see :meth:`VATT.tower`). Not a module: the backbone owns the weights."""

    def __init__(self, backbone: ModalityAgnosticTransformer, modality: str):
        self.backbone, self.modality = backbone, modality

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x, self.modality)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x, self.modality)

    @property
    def width(self) -> int:
        return self.backbone.width

    @property
    def drop_rate(self) -> float:
        return self.backbone.drop_rates[self.modality]

    @drop_rate.setter
    def drop_rate(self, rate: float) -> None:
        self.backbone.drop_rates[self.modality] = rate


class VATT(nn.Module):
    """Video-Audio-Text Transformer.

    Args:
        config: the :class:`~vatt.config.ModelConfig` (see ``vatt.config`` presets).
        tokenizer: the word vocabulary used to encode strings in :meth:`encode_text`, or None.

    ``forward(video=None, audio=None, text=None)`` returns, for the modalities given:
    ``video_agg`` [B, Dv], ``video_va`` [B, 512], ``video_vt`` [B, 256], ``audio_agg`` [B, Da],
    ``audio_va`` [B, 512], ``text_agg`` [B, L, Dt] or [B, Dt], ``text_vt`` [B, L, 256] or [B, 256].
    DropToken runs only in training mode.
    """

    def __init__(self, config: ModelConfig, tokenizer: WordTokenizer | None = None):
        super().__init__()
        config.check()
        if tokenizer is not None and len(tokenizer) > config.text.vocab_size:
            raise ConfigError(
                f"the vocabulary has {len(tokenizer)} words but the word table has text.vocab_size="
                f"{config.text.vocab_size} rows"
            )
        self.config = config
        self.tokenizer = tokenizer
        if config.modality_agnostic:
            self.backbone = ModalityAgnosticTransformer(config)
            dims = (self.backbone.width,) * 3
        else:
            self.video_backbone = VideoTransformer(config)
            self.audio_backbone = AudioTransformer(config)
            self.text_backbone = TextTransformer(config)
            dims = (self.video_backbone.width, self.audio_backbone.width, self.text_backbone.width)
        self.heads = CommonSpaceHeads(*dims, config.heads)
        if config.classifier is not None:
            self.classifier = classifier_head(self.feature_dim(config.classifier.modality), config.classifier)

    # -- towers ------------------------------------------------------------------------------------
    def tower(self, modality: str) -> nn.Module:
        """The network that turns one modality's input into its AGG feature: ``video_backbone``,
        ``audio_backbone``, ``text_backbone``, or a view of the shared (modality-agnostic) backbone.
        Every tower answers ``tower(x)`` ``[B, D]``, ``forward_features(x)`` ``[B, 1 + N, D]``,
        ``width``, and (video, audio) ``drop_rate``.

        Why not an ``nn.ModuleDict`` keyed by modality: it would rename every saved key
        (``video_backbone.*`` -> ``towers.video.*``), so saved models, the official converter's key
        mapping and FSDP optimizer states would all need a translation layer; this one accessor
        gives the code the same single path with the files unchanged."""
        if modality not in MODALITIES:
            raise InputError(f"expected a modality in {', '.join(MODALITIES)}; got {modality!r}")
        if self.config.modality_agnostic:
            return _SharedTowerView(self.backbone, modality)
        return getattr(self, f"{modality}_backbone")

    # -- features and training hooks -------------------------------------------------------------
    def features(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """The backbone's AGG feature ``[B, D]`` of ``x`` (no common-space heads); floating-point
        inputs are cast to the model's dtype (e.g. float32 clips into a float64 model)."""
        return self.tower(modality)(self._as_model_dtype(x))

    def token_features(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Every output token of the backbone, ``[B, 1 + N, D]``: the AGG feature first, then the
        N input tokens (video in (t, h, w) order; text includes padding positions)."""
        return self.tower(modality).forward_features(self._as_model_dtype(x))

    def _as_model_dtype(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        dtype = next(self.parameters()).dtype
        return x if x.dtype == dtype else x.to(dtype)

    _agg = features  # the name used before ``features`` was public

    def feature_dim(self, modality: str) -> int:
        """Width ``D`` of :meth:`features` for ``modality``."""
        return int(self.tower(modality).width)

    def transformer_blocks(self) -> Iterator[nn.Module]:
        """Every transformer block of every backbone (the units of activation checkpointing and
        FSDP sharding)."""
        backbones = [self.backbone] if self.config.modality_agnostic else [self.tower(m) for m in MODALITIES]
        for backbone in backbones:
            yield from backbone.transformer_blocks()

    def set_grad_checkpointing(self, enable: bool = True) -> int:
        """Recompute each transformer block's activations in the backward pass (less memory, the
        same outputs and gradients). Returns the number of blocks."""
        blocks = list(self.transformer_blocks())
        for block in blocks:
            block.grad_checkpointing = bool(enable)
        return len(blocks)

    @property
    def droptoken_rates(self) -> dict[str, float]:
        """DropToken rates used in training mode: ``{"video": r, "audio": r}``."""
        return {m: self.tower(m).drop_rate for m in DROPTOKEN_MODALITIES}

    def set_droptoken_rates(self, video: float | None = None, audio: float | None = None) -> None:
        """Change the DropToken rates (e.g. 0 for fine-tuning); the config follows, so a saved
        model keeps them."""
        for modality, rate in (("video", video), ("audio", audio)):
            if rate is None:
                continue
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{modality} DropToken rate must be in [0, 1), got {rate}")
            getattr(self.config, modality).drop_rate = float(rate)
            self.tower(modality).drop_rate = float(rate)

    # -- classification (fine-tuned models) -------------------------------------------------------
    def classify(self, x: torch.Tensor, probabilities: bool = False) -> torch.Tensor:
        """Class logits ``[B, C]`` (or probabilities: softmax, or sigmoid for a multi-label head)
        of a model with a classification head (``config.classifier``, e.g. a converted official
        K400 or AudioSet fine-tune). ``x``: video ``[B, T, H, W, 3]`` or audio ``[B, S]``."""
        c = self.config.classifier
        if c is None:
            raise InputError("this model has no classification head (config.classifier is empty); fine-tune it "
                             "with `vatt finetune` or vatt.train.finetune.Classifier")
        if self.config.validate_inputs:
            self.check_input(x, c.modality)
        logits = self.classifier(self.features(x, c.modality))
        if not probabilities:
            return logits
        return torch.sigmoid(logits) if c.multilabel else torch.softmax(logits, dim=-1)

    def forward(
        self,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        validate: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the given modalities. ``validate`` (default ``config.validate_inputs``) checks
        shapes, dtypes and value ranges and raises :class:`~vatt.errors.InputError`."""
        if video is None and audio is None and text is None:
            raise InputError("give at least one of video=, audio=, text=")
        check = self.config.validate_inputs if validate is None else validate
        out: dict[str, torch.Tensor] = {}
        for modality, x in (("video", video), ("audio", audio), ("text", text)):
            if x is None:
                continue
            if check:
                self.check_input(x, modality)
            if modality == "text":  # [B, W] or [B, L, W]: the captions of a clip run as one batch
                flat = self.features(x.reshape(-1, x.shape[-1]), modality)
                agg = flat.reshape(*x.shape[:-1], flat.shape[-1])
            else:
                agg = self.features(x, modality)
            out[f"{modality}_agg"] = agg
            out.update(self.heads.project(agg, modality))
        return out

    # -- input checks ----------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, modality: str) -> None:
        """Raise :class:`~vatt.errors.InputError` naming the expected shape, dtype and range
        unless ``x`` is a valid input of ``modality`` for this model."""
        if modality not in MODALITIES:
            raise InputError(f"expected a modality in {', '.join(MODALITIES)}; got {modality!r}")
        getattr(self, f"check_{modality}")(x)

    def check_video(self, video: torch.Tensor) -> None:
        v = self.config.video
        expected = (
            f"video [B, T, H, W, 3] in [-1, 1] (floating point; T a multiple of {v.patch_size[0]}, H of "
            f"{v.patch_size[1]}, W of {v.patch_size[2]}; this model: [B, {v.num_frames}, {v.crop_size}, {v.crop_size}, 3])"
        )
        ok = (
            isinstance(video, torch.Tensor)
            and video.ndim == 5
            and video.shape[-1] == 3
            and video.is_floating_point()
            and all(n > 0 and n % p == 0 for n, p in zip(video.shape[1:4], v.patch_size))
        )
        if not ok:
            hint = " (channels-first? use x.permute(0, 2, 3, 4, 1))" if _channels_first(video) else ""
            raise InputError(f"expected {expected}; got {describe_tensor(video)}{hint}")
        _check_range(video, expected)

    def check_audio(self, audio: torch.Tensor) -> None:
        a = self.config.audio
        expected = (
            f"audio [B, S] in [-1, 1] (floating point; S a multiple of {a.patch_size}; this model: "
            f"[B, {a.num_samples}] at {a.sample_rate} Hz)"
        )
        ok = (
            isinstance(audio, torch.Tensor)
            and audio.ndim == 2
            and audio.is_floating_point()
            and audio.shape[1] > 0
            and audio.shape[1] % a.patch_size == 0
        )
        if not ok:
            raise InputError(f"expected {expected}; got {describe_tensor(audio)}")
        _check_range(audio, expected)

    def check_text(self, text: torch.Tensor) -> None:
        t = self.config.text
        expected = f"text ids int64 [B, {t.max_words}] or [B, L, {t.max_words}] with 0 <= id < {t.vocab_size}"
        ok = (
            isinstance(text, torch.Tensor)
            and text.ndim in (2, 3)
            and text.shape[-1] == t.max_words
            and not text.is_floating_point()
            and text.dtype != torch.bool
        )
        if not ok:
            raise InputError(f"expected {expected}; got {describe_tensor(text)}")
        if text.device.type != "meta" and text.numel():
            lo, hi = int(text.min()), int(text.max())
            if lo < 0 or hi >= t.vocab_size:
                raise InputError(f"expected {expected}; got ids in [{lo}, {hi}] (a vocabulary larger than the model's?)")

    # -- embedding API --------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, **inputs) -> dict[str, torch.Tensor]:
        was_training = self.training
        self.eval()
        try:
            return self(**inputs)
        finally:
            self.train(was_training)

    def encode_video(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference embeddings of clips ``[B, T, H, W, 3]`` in [-1, 1] (eval mode, no grad):
        ``{"video_agg" [B, Dv], "video_va" [B, 512], "video_vt" [B, 256]}``."""
        return self._encode(video=video.to(self._device))

    def encode_audio(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference embeddings of waveforms ``[B, S]`` in [-1, 1]: ``{"audio_agg", "audio_va"}``."""
        return self._encode(audio=audio.to(self._device))

    def encode_text(self, text: str | Sequence[str] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference embeddings of sentences: ``{"text_agg" [N, Dt], "text_vt" [N, 256]}``.

        ``text``: a string (N = 1), a list of strings (tokenised with :attr:`tokenizer`), or ids
        ``[N, W]`` / ``[B, L, W]`` (outputs then keep the leading dims).
        """
        if isinstance(text, str):
            text = [text]
        if not isinstance(text, torch.Tensor):
            if self.tokenizer is None:
                raise InputError(
                    "this model has no vocabulary to tokenise strings; pass word ids, or create it with "
                    "create_model(..., vocab=WordTokenizer)"
                )
            text = self.tokenizer.encode(list(text), self.config.text.max_words)
        return self._encode(text=text.to(self._device))

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # -- save / load ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` (the architecture: no runtime switches, see ``vatt.config.RUNTIME_FIELDS``),
        ``model.safetensors`` and (with a tokenizer) ``vocab.json``, each atomically. Returns the directory."""
        from safetensors import SafetensorError

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_safetensors(directory / WEIGHTS_FILE, self.state_dict(), {"format": CHECKPOINT_FORMAT})
        except SafetensorError as e:  # e.g. disk full: safetensors reports it as its own error
            raise CheckpointError(f"could not write {directory / WEIGHTS_FILE}: {' '.join(str(e).split())[:300]}") from None
        if self.tokenizer is not None:
            self.tokenizer.save(directory / VOCAB_FILE)
        meta = {"format": CHECKPOINT_FORMAT, "version": 1, "config": self.config.architecture_dict()}
        atomic_write_text(directory / CONFIG_FILE, json.dumps(meta, indent=2))
        return directory

    @property
    def word_table(self) -> nn.Embedding:
        """The ``[vocab_size, word_dim]`` word embedding table of the text tower."""
        return self.backbone.text.embed if self.config.modality_agnostic else self.text_backbone.words

    def set_word_vectors(self, vectors: torch.Tensor, trainable: bool = False) -> None:
        """Use pretrained word vectors ``[vocab_size, word_dim]`` (row i = word id i of
        :attr:`tokenizer`). Official VATT uses frozen word2vec vectors, hence ``trainable=False``."""
        t = self.config.text
        if not isinstance(vectors, torch.Tensor) or tuple(vectors.shape) != (t.vocab_size, t.word_dim):
            raise InputError(f"expected word vectors [{t.vocab_size}, {t.word_dim}]; got {describe_tensor(vectors)}")
        table = self.word_table
        with torch.no_grad():
            table.weight.copy_(vectors)
        table.weight.requires_grad_(trainable)
        self.config.text.trainable_word_table = trainable  # saved with the model

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _channels_first(x) -> bool:
    return isinstance(x, torch.Tensor) and x.ndim == 5 and x.shape[1] == 3 and x.shape[-1] != 3


def _check_range(x: torch.Tensor, expected: str) -> None:
    if x.device.type == "meta" or x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if not (-1 - RANGE_MARGIN <= lo and hi <= 1 + RANGE_MARGIN):  # also catches NaN
        hint = " (pixels 0..255? scale with x / 127.5 - 1)" if hi > 2 else ""
        raise InputError(f"expected {expected}; got {describe_tensor(x)}{hint}")


def create_model(name: str | ModelConfig = DEFAULT_PRESET, vocab: WordTokenizer | None = None, **overrides: Any) -> VATT:
    """Build a freshly initialised model from a preset name (or a :class:`ModelConfig`).

    Args:
        name: ``"tiny"``, ``"bbs"``, ``"mbs"`` (default), ``"lbs"``, ``"ma-medium"``, or a config.
        vocab: a :class:`~vatt.text.WordTokenizer`; sets ``text.vocab_size`` to its size unless
            that is overridden, and becomes ``model.tokenizer``.
        overrides: dotted keys (``**{"video.drop_rate": 0.25}``), ``video__drop_rate=0.25``, or
            nested dicts (``video={"drop_rate": 0.25}``).
    """
    if isinstance(name, ModelConfig):
        cfg = name.override(overrides)
    else:
        if vocab is not None and not _mentions_vocab_size(overrides):
            overrides = {**overrides, "text.vocab_size": len(vocab)}
        cfg = get_config(name, overrides)
    return VATT(cfg, vocab)


def _mentions_vocab_size(overrides: dict) -> bool:
    text = overrides.get("text")
    return (
        "text.vocab_size" in overrides
        or "text__vocab_size" in overrides
        or (isinstance(text, dict) and "vocab_size" in text)
    )


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> VATT:
    """Load a model written by :meth:`VATT.save_pretrained` (or a run directory holding it in
    ``model/``). Returns it in eval mode on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    directory = path
    if (path / "model" / CONFIG_FILE).is_file() and not (path / CONFIG_FILE).is_file():
        directory = path / "model"
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not path.exists():
        raise CheckpointError(f"model not found: {path}")
    if not (config_path.is_file() and weights_path.is_file()):
        raise CheckpointError(
            f"{path} is not a vatt model directory (expected {CONFIG_FILE} and {WEIGHTS_FILE}, as written by "
            "model.save_pretrained)"
        )
    meta = read_tagged_json(config_path, CHECKPOINT_FORMAT, "a vatt model config")
    if "config" not in meta:
        raise CheckpointError(f"{config_path} is not a vatt model config (it has no 'config')")
    saved = meta["config"]
    if isinstance(saved, dict):  # runtime switches an older config.json holds: this machine chooses them
        saved = {k: v for k, v in saved.items() if k not in RUNTIME_FIELDS}
    try:
        cfg = ModelConfig.from_dict(saved)
    except ConfigError as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    device = _check_device(device)
    tokenizer = WordTokenizer.load(directory / VOCAB_FILE) if (directory / VOCAB_FILE).is_file() else None
    try:
        with torch.device("meta"):  # no initialisation work: every tensor comes from the file
            model = VATT(cfg, tokenizer)
    except ConfigError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    _check_weights_header(weights_path, model)  # before reading any tensor data
    try:
        state = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from None
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise CheckpointError(f"{weights_path} does not match its config: {' '.join(first[:3])[:500]}") from None
    log.info("loaded %s model from %s", cfg.name, directory)
    return model.to(device).eval()



def _check_device(device) -> torch.device:
    """A torch device that exists here, or InputError (``--device cuda`` on a machine without CUDA)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InputError(f"device should be like 'cpu', 'cuda' or 'cuda:1', got {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type not in ("cpu", "meta") and not getattr(torch, dev.type, None):
        raise InputError(f"device {device!r} is not available here; use 'cpu' or 'cuda'")
    return dev


def _check_weights_header(weights_path: Path, model: nn.Module) -> None:
    """Compare the safetensors header (names, shapes) with the model the config describes, so a
    tampered config or a mismatched file is one line before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {wrong[0]}: file {list(shapes[wrong[0]])}, config "
                         f"{list(expected[wrong[0]])})")
        raise CheckpointError(f"{weights_path} does not match its config.json: {'; '.join(parts)}")
