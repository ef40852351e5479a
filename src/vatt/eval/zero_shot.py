"""Zero-shot classification from class names (beyond the paper): any labelled set, no training.

Each class name is written into one or more prompt templates (``"a video of {}"``; the default
``"{}"`` is the bare name); the text tower embeds every prompt into S_vt, the unit prompt vectors
of a class are averaged and normalised again (the CLIP recipe). Videos are embedded into S_vt
over ``num_windows`` windows (unit window vectors averaged and normalised, the retrieval
"average embeddings" rule) and each is given the class of highest cosine similarity. Class names
are read as words by the model's tokenizer: ``"ApplyEyeMakeup"`` or ``"apply_eye_makeup"`` should
be written as ``"apply eye makeup"`` first (:func:`readable_class_name`).
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

import torch

from ..errors import InputError
from ..progress import Progress
from ..embed import embed_texts, eval_dataset, extract_features, l2_normalize
from .metrics import topk_accuracy

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("{}",)


def readable_class_name(name: str) -> str:
    """``"ApplyEyeMakeup"`` / ``"apply_eye_makeup"`` / ``"Dog-barking"`` -> ``"apply eye makeup"`` ...:
    CamelCase split, underscores and dashes to spaces, lower case."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return " ".join(re.sub(r"[_\-/]+", " ", text).lower().split())


def class_embeddings(model, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, *,
                     device="cpu") -> torch.Tensor:
    """Unit S_vt vectors ``[C, 256]``: each class's prompts embedded, averaged, normalised."""
    if not classes:
        raise InputError("zero-shot classification needs at least one class name")
    templates = list(templates) or list(DEFAULT_TEMPLATES)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise InputError(f"a prompt template must contain '{{}}' where the class name goes, got {bad[0]!r}")
    prompts = [t.format(c) for c in classes for t in templates]
    text = embed_texts(model, prompts, device=device)["text_vt"].reshape(len(classes), len(templates), -1)
    return l2_normalize(text.mean(1))


def zero_shot_scores(video_vt: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``[N, C]`` of videos ``[N, V, 256]`` (windows) and classes ``[C, 256]``."""
    if video_vt.dim() != 3 or class_vectors.dim() != 2 or video_vt.shape[-1] != class_vectors.shape[-1]:
        raise InputError(f"expected videos [N, V, D] and classes [C, D], got {list(video_vt.shape)} and "
                         f"{list(class_vectors.shape)}")
    return l2_normalize(l2_normalize(video_vt.float()).mean(1)) @ l2_normalize(class_vectors.float()).t()


def zero_shot_classify(model, source, classes: Sequence[str] | None = None, *,
                       templates: Sequence[str] = DEFAULT_TEMPLATES, num_windows: int = 4, batch_size: int = 8,
                       device="cpu", num_workers: int = 0, readable: bool = True,
                       progress: Progress | None = None) -> dict:
    """Classify every item of a labelled ``source`` by its class names.

    Args:
        source: a labelled source or built dataset (labels give the accuracy; an unlabelled one
            gives predictions only).
        classes: class names in label-id order; default the source's own (``dataset.classes``).
        templates: prompt templates with ``{}`` for the class name.
        readable: rewrite names with :func:`readable_class_name` before embedding.
    Returns:
        ``{"top1", "top5" (when labelled), "num_classes", "chance", "num_test", "scores" [N, C],
        "predictions" [N], "labels", "keys", "prompts"}``.
    """
    dataset = eval_dataset(model, source, num_windows=num_windows, classes=classes)
    names = list(classes) if classes is not None else getattr(dataset, "classes", None)
    if not names:
        raise InputError(f"{source}: no class names; give classes=[...] (or a labelled source)")
    prompts = [readable_class_name(c) if readable else c for c in names]
    vectors = class_embeddings(model, prompts, templates, device=device)
    feats = extract_features(model, dataset, outputs=["video_vt"], batch_size=batch_size, device=device,
                             num_workers=num_workers, progress=progress)
    scores = zero_shot_scores(feats["video_vt"], vectors)
    result = {"num_classes": len(names), "chance": 1.0 / len(names), "num_test": len(scores), "scores": scores,
              "predictions": scores.argmax(1), "keys": feats["key"], "prompts": prompts,
              "templates": list(templates)}
    if "label" in feats:
        labels = feats["label"]
        if labels.dim() != 1:
            raise InputError("zero-shot top-k needs single-label classes")
        result["labels"] = labels
        result.update(topk_accuracy(scores, labels.long(), ks=(1, 5)))
        log.info("zero-shot classification: top-1 %.4f on %d items, %d classes", result["top1"], len(scores), len(names))
    return result


def parse_labels(labels: str) -> list[str]:
    """Class names from a file (one a line) or a comma-separated string (``"dog, cat, a red car"``)."""
    from pathlib import Path

    path = Path(labels)
    if "," not in labels and path.is_file():
        from ..embed import read_sentences

        names = read_sentences(path)
    else:
        names = [n.strip() for n in labels.split(",") if n.strip()]
    if len(names) < 2:
        raise InputError(f"give at least two class names (a file with one a line, or \"a,b,c\"), got {names}")
    if len(set(names)) < len(names):
        raise InputError(f"class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def classify_videos(model, paths: Sequence[str], classes: Sequence[str], *,
                    templates: Sequence[str] = DEFAULT_TEMPLATES, k: int = 5, num_windows: int = 4,
                    batch_size: int = 8, device="cpu", num_workers: int = 0, readable: bool = False,
                    progress: Progress | None = None) -> list[dict]:
    """Zero-shot classes of one's own video files: ``[{"path", "top": [(class, cosine), ...k]}]`` in
    input order; unreadable files are left out (and counted in the log)."""
    from pathlib import Path

    from ..data.config import DataConfig
    from ..data.datasets import ClipDataset
    from ..data.index import ClipRef

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"video file(s) not found: {missing[:3]}")
    refs = [ClipRef(str(p)) for p in paths]
    dataset = ClipDataset(refs, DataConfig.from_model_config(model.config), model.tokenizer, train=False,
                          num_windows=num_windows)
    result = zero_shot_classify(model, dataset, list(classes), templates=templates, num_windows=num_windows,
                                batch_size=batch_size, device=device, num_workers=num_workers, readable=readable,
                                progress=progress)
    top = result["scores"].topk(min(k, len(classes)), dim=1)
    return [{"path": key, "top": [(classes[int(j)], float(s)) for s, j in zip(scores, idx)]}
            for key, scores, idx in zip(result["keys"], top.values, top.indices)]
