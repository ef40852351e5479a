"""The built-in demo corpus: real H.264/AAC files whose video, audio and narration share meaning.

Each clip shows one object on a textured background. Its attributes drive all three modalities:

=========  =====================  ==========================  ===============================
attribute  video                  audio                       narration (synonyms)
=========  =====================  ==========================  ===============================
shape      circle/square/...      timbre (sine/square/saw/FM)  "ball", "box", "wedge", "plus"
colour     red/green/blue/yellow  pitch (220-660 Hz)           "crimson", "emerald", "navy"
motion     right / down / bounce  rhythm (steady/2 Hz/5 Hz)    "slides right", "drops", "hops"
=========  =====================  ==========================  ===============================

Narration is like a speech transcript: several cues per clip with synonyms, filler words,
sometimes an off-topic sentence, and timing jittered off the action. Layout of ``OUT``::

    pretrain/*.mp4 + .srt          video + audio + narration (pretraining)
    audio_only/*.wav               the sounds alone (22.05 kHz, no video, no text)
    labelled/{train,test}.csv      path,label (label = shape, or ``label=`` another attribute)
                                   + labelled/media/*.mp4, classes.txt
    retrieval/*.mp4 + .srt         held-out clips, every cue describes its clip (zero-shot retrieval)
    validation/*.mp4 + .srt        like retrieval/, other clips of the same combinations: for choosing
                                   a checkpoint without looking at the test clips
    attributes.csv                 path,shape,colour,motion,fps,duration of every file (ground truth)
    corpus.json                    seed, counts, classes, attributes, generator version

Everything is a function of ``(seed, subset, index)``, so the same seed gives identical files.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .captions import Caption, write_srt
from .encode import encode_mp4, wav_bytes
from ..atomic_io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..progress import Progress, advance, start as start_phase
from ..errors import InputError

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: validation/ split; labelled and validation sizes can be set
WIDTH, HEIGHT = 128, 96
SAMPLE_RATE = 16000
WAV_RATE = 22050
FPS_CHOICES = (24, 25, 30)  # several source rates, so the loader's resampling by time is exercised

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
MOTIONS = ("right", "down", "bounce")
RGB = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 235), "yellow": (235, 215, 40)}
PITCH = {"red": 220.0, "green": 330.0, "blue": 495.0, "yellow": 660.0}
PULSE_HZ = {"right": 0.0, "down": 2.0, "bounce": 5.0}

SYNONYMS = {
    "circle": ["circle", "ball", "disc", "round dot"],
    "square": ["square", "box", "block", "cube"],
    "triangle": ["triangle", "wedge", "pyramid", "arrowhead"],
    "cross": ["cross", "plus", "plus sign", "cross shape"],
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald", "lime"],
    "blue": ["blue", "navy", "azure"],
    "yellow": ["yellow", "golden", "lemon"],
    "right": ["moves to the right", "slides right", "drifts rightwards", "glides across"],
    "down": ["falls down", "drops", "sinks slowly", "slides downward"],
    "bounce": ["bounces", "hops", "jumps up and down", "bobs around"],
}
TEMPLATES = [
    "{f}the {c} {s} {m}",
    "{f}now we see a {c} {s} that {m}",
    "{f}look at this {s} it is {c} and it {m}",
    "{f}here the {s} {m}",
    "{f}a {c} {s} right there",
    "{f}watch how the {c} one {m}",
]
FILLERS = ["", "", "okay so ", "um ", "alright ", "and then ", "you know ", "so basically "]
DISTRACTORS = [
    "thanks for watching this video",
    "let me show you something",
    "don't forget to subscribe",
    "this part is pretty easy",
    "i will explain it later",
]


@dataclass(frozen=True)
class ClipSpec:
    shape: str
    colour: str
    motion: str
    duration: float
    fps: int

    @property
    def label(self) -> str:
        return self.shape


def _rng(seed: int, subset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, subset)) * 7919 + len(subset), index])


def random_spec(rng: np.random.Generator, combo: tuple[str, str, str] | None = None) -> ClipSpec:
    shape, colour, motion = combo or (SHAPES[rng.integers(4)], COLOURS[rng.integers(4)], MOTIONS[rng.integers(3)])
    return ClipSpec(shape, colour, motion, float(np.round(rng.uniform(2.4, 3.4), 2)), int(rng.choice(FPS_CHOICES)))


# --------------------------------------------------------------------------------------------
# Pictures, sounds, words
# --------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(15, 70, size=3)
    tilt = rng.uniform(-25, 25, size=3)
    yy = np.linspace(0, 1, HEIGHT)[:, None, None]
    xx = np.linspace(0, 1, WIDTH)[None, :, None]
    img = base + tilt * (0.6 * yy + 0.4 * xx) + rng.normal(0, 6, size=(HEIGHT, WIDTH, 3))
    return np.clip(img, 0, 255).astype(np.float32)


def _shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "triangle":  # apex up
        t = (dy + r) / (2 * r)
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    bar = r / 3
    return ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= r))


def render_frames(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[N, HEIGHT, WIDTH, 3]`` at ``spec.fps`` for ``spec.duration`` seconds."""
    n = int(round(spec.duration * spec.fps))
    bg = _background(rng)
    colour = np.clip(np.array(RGB[spec.colour]) + rng.normal(0, 12, 3), 0, 255).astype(np.float32)
    r = float(rng.uniform(13, 17))
    x0, y0 = rng.uniform(0.3, 0.7) * WIDTH, rng.uniform(0.35, 0.65) * HEIGHT
    frames = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n):
        p = i / max(1, n - 1)
        t = i / spec.fps
        if spec.motion == "right":
            cx, cy = (0.15 + 0.7 * p) * WIDTH, y0
        elif spec.motion == "down":
            cx, cy = x0, (0.18 + 0.64 * p) * HEIGHT
        else:
            cx, cy = x0, 0.78 * HEIGHT - abs(np.sin(np.pi * 1.5 * t)) * 0.5 * HEIGHT
        img = bg.copy()
        img[_shape_mask(spec.shape, cx, cy, r)] = colour
        frames[i] = img.astype(np.uint8)
    return frames


def render_sound(spec: ClipSpec, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 ``[duration * rate]`` in [-1, 1]: timbre = shape, pitch = colour, rhythm = motion."""
    t = np.arange(int(round(spec.duration * rate))) / rate
    f = PITCH[spec.colour] * rng.uniform(0.97, 1.03)
    phase = 2 * np.pi * f * t
    if spec.shape == "circle":
        wave_ = np.sin(phase)
    elif spec.shape == "square":
        wave_ = np.sign(np.sin(phase)) * 0.6
    elif spec.shape == "triangle":
        wave_ = 2 * ((f * t) % 1.0) - 1  # sawtooth
        wave_ *= 0.7
    else:
        wave_ = np.sin(phase + 4.0 * np.sin(2 * np.pi * 0.5 * f * t))  # FM: metallic
    pulse = PULSE_HZ[spec.motion]
    env = np.ones_like(t) if pulse == 0 else (((t * pulse) % 1.0) < 0.5).astype(np.float64)
    env = np.convolve(env, np.ones(80) / 80, mode="same")  # soften clicks
    sig = 0.45 * wave_ * env + rng.normal(0, 0.02, t.shape)
    return np.clip(sig, -1, 1).astype(np.float32)


def describe(spec: ClipSpec, rng: np.random.Generator) -> str:
    pick = lambda key: SYNONYMS[key][rng.integers(len(SYNONYMS[key]))]  # noqa: E731
    tpl = TEMPLATES[rng.integers(len(TEMPLATES))]
    return tpl.format(f=FILLERS[rng.integers(len(FILLERS))], c=pick(spec.colour), s=pick(spec.shape), m=pick(spec.motion))


def narration(spec: ClipSpec, rng: np.random.Generator, distractors: bool = True) -> list[Caption]:
    """2-4 cues over the clip; timing jittered by up to ±0.3 s; sometimes one off-topic cue."""
    n = int(rng.integers(2, 5))
    step = spec.duration / n
    off_topic = int(rng.integers(n)) if distractors and rng.random() < 0.3 else -1
    caps = []
    for k in range(n):
        s = max(0.0, k * step + rng.uniform(-0.3, 0.3))
        e = max(s + 0.3, (k + 1) * step + rng.uniform(-0.3, 0.3))
        text = DISTRACTORS[rng.integers(len(DISTRACTORS))] if k == off_topic else describe(spec, rng)
        caps.append(Caption(round(s, 3), round(e, 3), text))
    return caps


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def _make_job(job: tuple) -> tuple[str, str]:
    """Write one file (worker entry point). Returns ``(relative path, its ClipSpec)``."""
    out, subset, index, seed, combo = job
    rng = _rng(seed, subset, index)
    spec = random_spec(rng, combo)
    out = Path(out)
    name = f"{subset}_{index:05d}"
    if subset == "audio_only":
        rel = f"audio_only/{name}.wav"
        atomic_write_bytes(out / rel, wav_bytes(render_sound(spec, rng, WAV_RATE), WAV_RATE))
        return rel, spec
    frames = render_frames(spec, rng)
    audio = render_sound(spec, rng)
    folder = {"pretrain": "pretrain", "retrieval": "retrieval", "validation": "validation", "train": "labelled/media",
              "test": "labelled/media"}[subset]
    rel = f"{folder}/{name}.mp4"
    atomic_write_bytes(out / rel, encode_mp4(frames, spec.fps, audio))
    if subset in ("pretrain", "retrieval", "validation"):
        write_srt(narration(spec, rng, distractors=subset == "pretrain"), (out / rel).with_suffix(".srt"))
    return rel, spec


def default_counts(clips: int, *, labelled_train: int | None = None, labelled_test: int | None = None,
                   validation: int | None = None) -> dict[str, int]:
    """Files per subset for ``clips`` pretraining clips. By default the labelled splits are
    ``clips / 2`` and ``clips / 4`` clips and ``validation`` as many clips as ``retrieval``."""
    if clips < 1:
        raise InputError(f"clips must be >= 1, got {clips}")
    retrieval = max(4, min(len(SHAPES) * len(COLOURS) * len(MOTIONS), clips // 4))
    return {
        "pretrain": clips,
        "audio_only": max(1, clips // 4),
        "train": max(len(SHAPES), clips // 2 if labelled_train is None else labelled_train),
        "test": max(len(SHAPES), clips // 4 if labelled_test is None else labelled_test),
        "retrieval": retrieval,
        "validation": retrieval if validation is None else max(0, validation),
    }


def make_corpus(out: str | os.PathLike, clips: int = 200, seed: int = 0, workers: int = 1,
                progress: Progress | None = None, *, labelled_train: int | None = None,
                labelled_test: int | None = None, validation: int | None = None, label: str = "shape") -> dict:
    """Write the demo corpus to ``out`` (layout in the module docstring); returns corpus.json's content.

    Labelled train/test clips cycle through the shapes so classes are balanced; retrieval and
    validation clips take distinct (shape, colour, motion) combinations so each caption set points
    at one clip. Every subset draws its clips from its own seeds, so no file of one is in another.
    ``labelled_train``, ``labelled_test``, ``validation``: sizes instead of :func:`default_counts`'s.
    ``label``: the attribute the labelled splits are labelled (and balanced) by: "shape"
    (default), "colour" or "motion"; every clip still has all three attributes.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    values = {"shape": SHAPES, "colour": COLOURS, "motion": MOTIONS}
    if label not in values:
        raise InputError(f"label must be one of {sorted(values)}, got {label!r}")
    counts = default_counts(clips, labelled_train=labelled_train, labelled_test=labelled_test,
                            validation=validation)  # validates before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start_phase(progress, sum(counts.values()), "synth", "file")  # vatt.progress convention
    combos = list(itertools.product(SHAPES, COLOURS, MOTIONS))
    order = np.random.default_rng([seed, 99]).permutation(len(combos))
    jobs = []
    for subset, n in counts.items():
        for i in range(n):
            combo = None
            if subset in ("train", "test"):
                r = _rng(seed, subset + "/combo", i)
                if label == "shape":  # the original draw: shape-labelled corpora are unchanged
                    combo = (SHAPES[i % len(SHAPES)], COLOURS[r.integers(4)], MOTIONS[r.integers(3)])
                else:
                    drawn = [SHAPES[r.integers(4)], COLOURS[r.integers(4)], MOTIONS[r.integers(3)]]
                    drawn[("shape", "colour", "motion").index(label)] = values[label][i % len(values[label])]
                    combo = tuple(drawn)
            elif subset in ("retrieval", "validation"):
                combo = combos[order[i % len(combos)]]
            jobs.append((str(out), subset, i, seed, combo))
    results = []
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            for r in pool.imap(_make_job, jobs, chunksize=4):
                results.append(r)
                advance(progress)
    else:
        for job in jobs:
            results.append(_make_job(job))
            advance(progress)
    for split in ("train", "test"):
        rows = ["path,label"] + [f"{rel.removeprefix('labelled/')},{getattr(spec, label)}"
                                 for (rel, spec), job in zip(results, jobs) if job[1] == split]
        atomic_write_text(out / "labelled" / f"{split}.csv", "\n".join(rows) + "\n")
    atomic_write_text(out / "labelled" / "classes.txt", "\n".join(values[label]) + "\n")
    table = ["path,shape,colour,motion,fps,duration"] + [
        f"{rel},{sp.shape},{sp.colour},{sp.motion},{sp.fps},{sp.duration}" for rel, sp in results
    ]
    atomic_write_text(out / "attributes.csv", "\n".join(table) + "\n")
    meta = {
        "generator": "vatt.data.synth",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "counts": {"pretrain": counts["pretrain"], "audio_only": counts["audio_only"], "labelled_train": counts["train"],
                   "labelled_test": counts["test"], "retrieval": counts["retrieval"],
                   "validation": counts["validation"]},
        "classes": list(values[label]),
        "label": label,
        "attributes": {"shape": list(SHAPES), "colour": list(COLOURS), "motion": list(MOTIONS)},
        "video": {"width": WIDTH, "height": HEIGHT, "fps": list(FPS_CHOICES), "codec": "h264"},
        "audio": {"sample_rate": SAMPLE_RATE, "codec": "aac", "audio_only_rate": WAV_RATE},
        "clip_seconds": [2.4, 3.4],
        "sources": {"pretrain": "pretrain", "audio_only": "audio_only", "train": "labelled/train.csv",
                    "test": "labelled/test.csv", "retrieval": "retrieval"}
                   | ({"validation": "validation"} if counts["validation"] else {}),
    }
    atomic_write_json(out / "corpus.json", meta)
    log.info("wrote %d files to %s", len(jobs), out)
    return meta
