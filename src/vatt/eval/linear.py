"""Linear evaluation (SPEC §6): a classifier on frozen AGG features.

Protocol (UCF101 / HMDB51 / ESC-50 style, SPEC §6): the backbone is frozen; each training item
gives one clip (the centre window); each test item gives ``num_windows`` evenly spaced windows.
``train_windows`` (default 1, the paper's protocol) averages the features of as many windows per
training item instead; ``train_windows == num_windows`` trains the classifier on the feature
distribution it is tested on. That matters for attributes that change within a clip: for the
synthetic corpus's motion label (docs/TRAINING.md#vatt-demo) a classifier trained on centre
windows and tested on 4-window averages scored 0.365 where one trained on 4-window averages
scored 0.865 (0.325 / 0.705 at random init). Two classifiers:

* ``"official"`` — the official code's evaluator (``utils/eval/evaluators.py``, the default of
  ``vatt bench``): raw features; Linear(D→128) → dropout 0.9 → Linear(128→C) → softmax, kernels
  Glorot-normal (truncated, Keras), biases zero; categorical cross-entropy plus ``0.1 · Σ w²`` on
  the **output kernel only** (Keras ``L2(0.1)``); Adam (lr 5e-4, eps 1e-7) for 1000 **epochs** of
  shuffled mini-batches of 64 (the last one smaller); each test window is scored on its own and
  the windows' softmax **probabilities** are averaged. Left different: TensorFlow's random
  numbers (initial weights, shuffles, dropout masks), Keras Adam's epsilon (added to ``sqrt(v)``
  before the bias correction: at most 3e-6 in torch's form, at step 1) and Keras's clipping of
  probabilities at 1e-7 inside the cross-entropy.
* ``"logistic"`` — multinomial logistic regression (scikit-learn, L-BFGS) on features
  standardised with the training mean and standard deviation, the test windows' features
  averaged (our choice: one regularisation strength fits every backbone width; the demo's probe).

Both report top-1 (``accuracy``) and top-5. With ``splits`` (e.g. the 3 UCF101 splits) the
result is the mean over the splits, as the official code averages them.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..progress import Progress, track
from ..embed import eval_dataset, extract_features
from .metrics import topk_accuracy

log = logging.getLogger(__name__)

CLASSIFIERS = ("logistic", "official")
MODALITIES = ("video", "audio")


def frozen_features(model, source, *, modality: str = "video", num_windows: int = 1, batch_size: int = 8,
                    device="cpu", num_workers: int = 0, progress: Progress | None = None, classes=None,
                    keep_windows: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """AGG features, labels ``[N]`` and the class names (None when the source does not name them)
    of a labelled source; ``classes`` fixes the label ids. Features are window-averaged ``[N, D]``,
    or ``[N, num_windows, D]`` with ``keep_windows``."""
    if modality not in MODALITIES:
        raise InputError(f"modality must be one of {MODALITIES}, got {modality!r}")
    dataset = eval_dataset(model, source, num_windows=num_windows, classes=classes)
    if hasattr(dataset, "classes") and dataset.classes is None:  # before decoding a whole unlabelled set
        raise InputError(f"{source} has no labels; a linear probe needs a labelled dataset (class folders, or a "
                         "manifest with a label column)")
    feats = extract_features(model, dataset, outputs=[f"{modality}_agg"], batch_size=batch_size,
                             device=device, num_workers=num_workers, progress=progress)
    if "label" not in feats:
        raise InputError(f"{source} has no labels; a linear probe needs a labelled dataset")
    labels = feats["label"]
    if labels.dim() != 1:
        raise InputError(f"linear probe needs single-label classes, got labels of shape {list(labels.shape)}")
    x = feats[f"{modality}_agg"]
    return (x if keep_windows else x.mean(1)), labels.long(), getattr(dataset, "classes", None)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, *, max_iter: int = 1000, C: float = 1.0, seed: int = 0):
    """Multinomial logistic regression; returns a function ``[M, D] -> (probabilities [M, K],
    their class ids [K])`` (the K classes seen in training)."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise InputError("the logistic classifier needs scikit-learn: pip install 'vatt[eval]' "
                         "(or use classifier='official')") from None

    clf = LogisticRegression(max_iter=max_iter, C=C, random_state=seed)
    clf.fit(x.double().numpy(), y.numpy())

    def predict_proba(z: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(clf.predict_proba(z.double().numpy())), torch.as_tensor(clf.classes_)

    return predict_proba


def glorot_normal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keras ``glorot_normal`` in place: a normal truncated at two standard deviations whose
    standard deviation after truncation is ``sqrt(2 / (fan_in + fan_out))``."""
    fan_out, fan_in = weight.shape
    std = (2.0 / (fan_in + fan_out)) ** 0.5 / 0.87962566103423978  # Keras' truncation correction
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)


class LowRankClassifier(nn.Module):
    """The official linear-evaluation head: Linear(D→hidden) → dropout → Linear(hidden→C), kernels
    initialised as Keras' ``glorot_normal``, biases zero; returns logits."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.9,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.reduce = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(hidden, num_classes)
        for layer in (self.reduce, self.classify):
            glorot_normal_(layer.weight, generator)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.dropout(self.reduce(x)))


def official_loss(head: LowRankClassifier, x: torch.Tensor, y: torch.Tensor, l2: float = 0.1) -> torch.Tensor:
    """Mean cross-entropy of the batch plus ``l2 · Σ w²`` of the output kernel (the official
    head regularises only its ``cls`` layer's kernel)."""
    return nn.functional.cross_entropy(head(x), y) + l2 * head.classify.weight.square().sum()


def epoch_batches(n: int, batch_size: int, epochs: int, generator: torch.Generator):
    """Index batches of Keras ``fit(shuffle=True)``: every epoch a new permutation of the ``n``
    items cut into batches of ``batch_size`` (the last one smaller)."""
    for _ in range(epochs):
        yield torch.randperm(n, generator=generator).split(batch_size)


def fit_official(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int = 1000, batch_size: int = 64,
                 lr: float = 5e-4, l2: float = 0.1, hidden: int = 128, dropout: float = 0.9, seed: int = 0,
                 progress: Progress | None = None):
    """Train :class:`LowRankClassifier` as the official evaluator does (see the module docstring);
    returns a function ``[M, D] -> (softmax probabilities [M, num_classes], class ids)``."""
    gen = torch.Generator().manual_seed(seed)
    head = LowRankClassifier(x.shape[1], num_classes, hidden, dropout, generator=gen)
    # fused: 1.04 against 1.28 ms a step at UCF101's shapes (D 1024, 101 classes, batch 64, 1 thread)
    opt = torch.optim.Adam(head.parameters(), lr=lr, eps=1e-7, fused=True)
    x, y = x.float(), y.long()
    head.train()
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout masks
        for batches in track(progress, epoch_batches(len(x), batch_size, epochs, gen), total=epochs,
                             desc="linear head", unit="epoch"):
            for idx in batches:
                loss = official_loss(head, x[idx], y[idx], l2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    head.eval()

    @torch.no_grad()
    def predict_proba(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return head(z.float()).softmax(1), torch.arange(num_classes)

    return predict_proba


def window_scores(predict_proba, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class probabilities ``[M, num_classes]`` of features ``[M, D]``, or of ``[M, W, D]``
    windows scored one by one and averaged (the official evaluator's test)."""
    flat = x.reshape(-1, x.shape[-1])
    proba, columns = predict_proba(flat)
    scores = torch.zeros(len(flat), num_classes, dtype=torch.float64)
    scores[:, columns.long()] = proba.double()  # classes missing from training score 0
    return scores.reshape(*x.shape[:-1], num_classes).mean(1) if x.dim() == 3 else scores


def classify_features(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                      classifier: str = "logistic", num_classes: int | None = None, seed: int = 0,
                      progress: Progress | None = None) -> dict:
    """Fit ``classifier`` on the training features ``[N, D]``; top-1 (``accuracy``) and top-5 on the
    test features, ``[M, D]`` or ``[M, W, D]`` (windows: probabilities averaged by ``"official"``,
    features averaged by ``"logistic"``; see the module docstring)."""
    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    if len(train_x) == 0 or len(test_x) == 0:
        raise InputError(f"empty split: {len(train_x)} training and {len(test_x)} test items")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    if classifier == "logistic":
        if len(train_y.unique()) < 2:
            raise InputError("logistic regression needs at least 2 classes in the training split")
        mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
        ex = test_x.mean(1) if test_x.dim() == 3 else test_x
        scores = window_scores(fit_logistic((train_x - mean) / std, train_y, seed=seed), (ex - mean) / std,
                               num_classes)
    else:
        predict_proba = fit_official(train_x, train_y, num_classes, seed=seed, progress=progress)
        scores = window_scores(predict_proba, test_x, num_classes)
    top = topk_accuracy(scores, test_y, ks=(1, 5))
    return {"accuracy": top["top1"], "top5": top["top5"], "chance": 1.0 / num_classes,
            "num_classes": num_classes, "num_train": len(train_x), "num_test": len(test_x)}


def linear_probe(model, train_source, test_source, *, modality: str = "video",
                 classifier: str | Sequence[str] = "logistic",
                 num_windows: int = 4, device="cpu", splits: Sequence[tuple] | None = None, batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0, progress: Progress | None = None,
                 train_windows: int = 1) -> dict:
    """Linear probe of ``model``'s frozen ``modality`` AGG features.

    Args:
        train_source, test_source: labelled sources (class-per-folder or CSV; see docs/DATA.md).
        modality: ``"video"`` or ``"audio"``.
        classifier: ``"logistic"`` or ``"official"`` (see the module docstring), or a list of
            them: features are extracted once and the result is ``{classifier: result}``.
        num_windows: test windows per item (see ``classifier`` for how they are combined).
        train_windows: training windows averaged per item (1, the centre window: the paper's
            protocol; see the module docstring for when to match ``num_windows``).
        splits: optional ``[(train_source, test_source), ...]``; when given, ``train_source``
            and ``test_source`` must be None and the accuracy is the mean over the splits.
    Returns:
        ``{"accuracy" (top-1), "top5", "chance", "num_classes", "num_train", "num_test",
        "classifier", "modality", "split_accuracies", "train_windows", "test_windows"}``; accuracy
        and top5 (means over the splits) are fractions in [0, 1].
    """
    if splits is None:
        if train_source is None or test_source is None:
            raise InputError("give train_source and test_source, or splits=[(train, test), ...]")
        splits = [(train_source, test_source)]
    elif train_source is not None or test_source is not None:
        raise InputError("give either train_source/test_source or splits, not both")
    classifiers = [classifier] if isinstance(classifier, str) else list(classifier)
    for c in classifiers:
        if c not in CLASSIFIERS:
            raise InputError(f"classifier must be one of {CLASSIFIERS}, got {c!r}")
    for name, n in (("num_windows", num_windows), ("train_windows", train_windows)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"{name} must be a positive integer, got {n!r}")
    per_classifier: dict[str, list[dict]] = {c: [] for c in classifiers}
    kw = dict(modality=modality, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    for train, test in splits:
        train_x, train_y, classes = frozen_features(model, train, num_windows=train_windows, **kw)
        test_x, test_y, _ = frozen_features(model, test, num_windows=num_windows, classes=classes, keep_windows=True,
                                            **kw)
        num_classes = len(classes) if classes else None
        for c in classifiers:
            res = classify_features(train_x, train_y, test_x, test_y, classifier=c, num_classes=num_classes, seed=seed,
                                    progress=progress)
            log.info("linear probe (%s, %s): top-1 %.4f, top-5 %.4f on %d test items", modality, c, res["accuracy"],
                     res["top5"], res["num_test"])
            per_classifier[c].append(res)
    outs = {}
    for c, results in per_classifier.items():
        out = dict(results[0])
        out.update(classifier=c, modality=modality, accuracy=sum(r["accuracy"] for r in results) / len(results),
                   top5=sum(r["top5"] for r in results) / len(results), split_accuracies=[r["accuracy"] for r in results], train_windows=train_windows,
                   test_windows=num_windows)
        outs[c] = out
    return outs[classifier] if isinstance(classifier, str) else outs

