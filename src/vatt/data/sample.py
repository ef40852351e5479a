"""How one sample is made (decode a window, pick its captions, augment), and the one rule every
dataset follows when a sample is bad: count it and move on (or raise, in strict mode).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from ..text import WordTokenizer
from . import transforms
from .captions import CaptionError, read_captions, select_captions
from .config import DataConfig
from .decode import MediaError, MediaReader
from .index import ClipRef
from .stats import BAD, MASKED, SampleStats


def _clip_span(ref: ClipRef, duration: float) -> tuple[float, float]:
    s0 = max(0.0, ref.start or 0.0)
    e0 = duration if ref.end is None else min(ref.end, duration) if duration > 0 else ref.end
    return s0, max(s0, e0)


def _text_for(ref: ClipRef, cfg: DataConfig, tokenizer, center: float, duration: float, events, strict: bool):
    """``(ids [num_captions, max_words], mask, sentences)`` for a window centred at ``center``."""
    empty = torch.zeros(cfg.num_captions, cfg.max_words, dtype=torch.long)
    if ref.captions is None or ref.audio_only:
        return empty, 0.0, []
    try:
        caps = ref.captions if isinstance(ref.captions, list) else read_captions(ref.captions, duration)
        if not caps:
            raise CaptionError(ref.captions if isinstance(ref.captions, str) else ref.path, "empty_captions")
    except CaptionError as e:
        if strict:
            raise
        events.append((ref.path, e.reason, MASKED, e.detail))
        return empty, 0.0, []
    sentences = select_captions(caps, center, cfg.num_captions)
    if tokenizer is None:
        return empty, 1.0, sentences
    return tokenizer.encode(sentences, cfg.max_words), 1.0, sentences


def _eval_key(ref: ClipRef) -> str:
    """The file path, plus the span when a manifest row names part of a file (keys stay unique)."""
    if ref.start is None and ref.end is None:
        return ref.path
    end = "" if ref.end is None else f"{ref.end:.2f}"
    return f"{ref.path}@{ref.start or 0.0:.2f}-{end}"


def _label_tensor(ref: ClipRef, num_classes: int, multi_label: bool):
    if multi_label:
        y = torch.zeros(num_classes, dtype=torch.float32)
        y[ref.label] = 1.0
        return y
    return torch.tensor(ref.label[0], dtype=torch.long)


def load_sample(
    ref: ClipRef,
    cfg: DataConfig,
    tokenizer: WordTokenizer | None,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    strict: bool = False,
    num_windows: int | None = None,
    num_crops: int = 1,
    classes: list[str] | None = None,
    multi_label: bool = False,
) -> dict:
    """Decode, caption and transform one sample (Batch-contract fields for one item).

    ``num_windows=None`` gives one window: random in training, the centre one otherwise;
    ``video`` ``[T, crop, crop, 3]``, ``audio`` ``[S]``. With ``num_windows=n`` (evaluation) the
    windows are evenly spaced over the clip: ``video`` ``[n * num_crops, T, crop, crop, 3]``
    (window-major), ``audio`` ``[n, S]``. Raises :class:`MediaError` / :class:`CaptionError`
    when the sample must be skipped; modality problems that only mask are listed in ``"_events"``.
    """
    events: list = []
    rng = rng if rng is not None else np.random.default_rng(0)
    win = cfg.clip_seconds
    with MediaReader(ref.data if ref.data is not None else ref.path, name=ref.path) as reader:
        info = reader.info
        if not info.has_video and not ref.audio_only:
            if strict:
                raise MediaError(ref.path, "no_video_track")
            events.append((ref.path, "no_video_track", MASKED, ""))
        if not info.has_audio:
            if strict and not ref.audio_only:
                raise MediaError(ref.path, "no_audio_track")
            if not info.has_video:
                raise MediaError(ref.path, "no_streams")
            events.append((ref.path, "no_audio_track", MASKED, ""))
        s0, e0 = _clip_span(ref, info.duration)
        last = max(s0, e0 - win)
        if num_windows is None:
            starts = [float(rng.uniform(s0, last)) if train else (s0 + last) / 2]
        else:
            starts = [float(x) for x in np.linspace(s0, last, num_windows)] if num_windows > 1 else [(s0 + last) / 2]
        views, audios = [], []
        for k, st in enumerate(starts):
            try:
                w = reader.read(st, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                                num_samples=cfg.num_samples, short_side=cfg.resize * 2)
            except MediaError as e:
                if e.reason != "no_frames" or st == 0.0:
                    raise
                # Metadata promised more than the file holds (truncated): fall back to the start.
                w = reader.read(0.0, num_frames=cfg.num_frames, fps=cfg.fps, sample_rate=cfg.sample_rate,
                                num_samples=cfg.num_samples, short_side=cfg.resize * 2)
                starts[k] = 0.0
                events.append((ref.path, "truncated", MASKED, "duration in metadata exceeds decodable data"))
            views.append(w.frames)
            audios.append(w.audio)
    T, c = cfg.num_frames, cfg.crop_size
    has_v = views[0] is not None
    has_a = audios[0] is not None
    color = None
    if num_windows is None:
        if has_v and train and cfg.device_augment:
            video, color = transforms.train_video_deferred(views[0], cfg, rng)
        elif has_v:
            video = transforms.train_video(views[0], cfg, rng) if train else transforms.eval_video(views[0], cfg)[0]
        elif train and cfg.device_augment:
            video, color = torch.zeros(T, c, c, 3, dtype=torch.uint8), torch.zeros(3, 4)  # maps to 0 (masked)
        else:
            video = torch.zeros(T, c, c, 3)
        if has_a:
            audio = transforms.train_audio(audios[0], cfg, rng) if train else transforms.eval_audio(audios[0])
        else:
            audio = torch.zeros(cfg.num_samples)
    else:
        if has_v:
            video = torch.cat([transforms.eval_video(v, cfg, num_crops) for v in views])
        else:
            video = torch.zeros(len(starts) * num_crops, T, c, c, 3)
        audio = torch.stack([transforms.eval_audio(a) for a in audios]) if has_a else torch.zeros(len(starts), cfg.num_samples)
    center = (starts[0] + win / 2) if num_windows is None else (s0 + e0) / 2
    text, text_mask, sentences = _text_for(ref, cfg, tokenizer, center, info.duration, events, strict)
    sample = {
        "video": video,
        "audio": audio,
        "text": text,
        "video_mask": torch.tensor(float(has_v)),
        "audio_mask": torch.tensor(float(has_a)),
        "text_mask": torch.tensor(text_mask),
        "key": f"{ref.path}@{starts[0]:.2f}" if num_windows is None else _eval_key(ref),
        "captions": sentences,
        "_events": events,
    }
    if color is not None:
        sample["video_affine"] = color
    if ref.label is not None and classes is not None:
        sample["label"] = _label_tensor(ref, len(classes), multi_label)
    return sample


# --------------------------------------------------------------------------------------------
# Bad samples: one rule for every dataset
# --------------------------------------------------------------------------------------------
def bad_event(e: Exception, name: str) -> tuple:
    """The ``(path, reason, BAD, detail)`` report of a sample that raised ``e``."""
    reason = getattr(e, "reason", None) or "decode_error"
    detail = getattr(e, "detail", "") if getattr(e, "reason", None) else f"{type(e).__name__}: {e}"
    return (name, reason, BAD, detail)


def try_load(load: Callable[[], dict], name: str, strict: bool) -> tuple[dict | None, tuple | None]:
    """``(sample, None)``, or ``(None, bad event)`` when ``load`` raised.

    Any exception counts (a bad file must never end a run, whatever the decoder raises); in
    ``strict`` mode it is raised instead as a :class:`DataError` naming the sample.
    """
    try:
        return load(), None
    except Exception as e:  # noqa: BLE001 - see the docstring; strict re-raises
        if strict:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{name}: decode_error ({type(e).__name__}: {e})") from e
        return None, bad_event(e, name)


def load_with_retries(load: Callable[[int], dict], idx: int, name_of: Callable[[int], str], *, tries: int,
                      strict: bool, draw: Callable[[], int]) -> dict:
    """``load(idx)``; after a bad sample, ``load(draw())`` up to ``tries`` times in all.

    Bad samples' reports ride on the returned sample (``"_events"``); when every try failed the
    result is a ``{"_skip": True}`` marker carrying them, which the loader counts and drops.
    """
    bad: list = []
    for _ in range(max(1, tries)):
        sample, event = try_load(lambda: load(idx), name_of(idx), strict)
        if sample is not None:
            sample["_events"] = bad + sample.get("_events", [])
            return sample
        bad.append(event)
        idx = draw()
    return {"_skip": True, "_events": bad, "key": name_of(idx)}


class StatsMixin:
    """Every dataset owns a :class:`SampleStats`, filled by the loader in the main process."""

    _stats: SampleStats

    def stats(self) -> dict:
        """``{"good", "bad", "reasons", "masked"}`` over everything loaded so far."""
        return self._stats.as_dict()
