"""Linear evaluation (SPEC §6): a classifier on frozen AGG features.

Protocol (UCF101 / HMDB51 / ESC-50 style, SPEC §6): the backbone is frozen; each training item
gives one clip (the centre window); each test item gives ``num_windows`` evenly spaced windows
whose AGG features are averaged. ``train_windows`` (default 1, the paper's protocol) averages as
many windows per training item instead; ``train_windows == num_windows`` trains the classifier on
the feature distribution it is tested on. That matters for attributes that change within a clip:
for the synthetic corpus's motion label (docs/TRAINING.md#vatt-demo) a classifier trained on
centre windows and tested on 4-window averages scored 0.365 where one trained on 4-window
averages scored 0.865 (0.325 / 0.705 at random init). Features are standardised with the
training mean and standard deviation (our choice: it makes one learning rate fit every backbone
width). Two classifiers:

* ``"official"``: Linear(D→128) → dropout 0.9 → Linear(128→C), trained with Adam (lr 5e-4)
  and an L2 penalty ``0.1 · Σ w²`` on the two kernels (Keras ``l2(0.1)`` semantics);
* ``"logistic"``: multinomial logistic regression (scikit-learn, L-BFGS).

With ``splits`` (e.g. the 3 UCF101 splits) the result is the mean accuracy over the splits.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..progress import Progress
from ..embed import eval_dataset, extract_features

log = logging.getLogger(__name__)

CLASSIFIERS = ("logistic", "official")
MODALITIES = ("video", "audio")


def frozen_features(model, source, *, modality: str = "video", num_windows: int = 1, batch_size: int = 8,
                    device="cpu", num_workers: int = 0, progress: Progress | None = None, classes=None
                    ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """Window-averaged AGG features ``[N, D]``, labels ``[N]`` and the class names (None when
    the source does not name them) of a labelled source; ``classes`` fixes the label ids."""
    if modality not in MODALITIES:
        raise InputError(f"modality must be one of {MODALITIES}, got {modality!r}")
    dataset = eval_dataset(model, source, num_windows=num_windows, classes=classes)
    feats = extract_features(model, dataset, outputs=[f"{modality}_agg"], batch_size=batch_size,
                             device=device, num_workers=num_workers, progress=progress)
    if "label" not in feats:
        raise InputError(f"{source} has no labels; a linear probe needs a labelled dataset")
    labels = feats["label"]
    if labels.dim() != 1:
        raise InputError(f"linear probe needs single-label classes, got labels of shape {list(labels.shape)}")
    return feats[f"{modality}_agg"].mean(1), labels.long(), getattr(dataset, "classes", None)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, *, max_iter: int = 1000, C: float = 1.0, seed: int = 0):
    """Multinomial logistic regression; returns a function ``[M, D] -> labels [M]``."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise InputError("the logistic classifier needs scikit-learn: pip install 'vatt[eval]' "
                         "(or use classifier='official')") from None

    clf = LogisticRegression(max_iter=max_iter, C=C, random_state=seed)
    clf.fit(x.double().numpy(), y.numpy())

    def predict(z: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(clf.predict(z.double().numpy()))

    return predict


class LowRankClassifier(nn.Module):
    """The official linear-evaluation head: Linear(D→hidden) → dropout → Linear(hidden→C)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.9):
        super().__init__()
        self.reduce = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.dropout(self.reduce(x)))


def fit_official(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, steps: int = 1000, batch_size: int = 256,
                 lr: float = 5e-4, l2: float = 0.1, hidden: int = 128, dropout: float = 0.9, seed: int = 0):
    """Train :class:`LowRankClassifier` with Adam on mini-batches (the whole set when it is
    smaller than ``batch_size``); returns a function ``[M, D] -> labels [M]``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = LowRankClassifier(x.shape[1], num_classes, hidden, dropout)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    x, y = x.float(), y.long()
    head.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small only lose time to thread synchronisation
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # dropout masks
            for _ in range(steps):
                idx = torch.randperm(len(x), generator=gen)[:batch_size]
                loss = nn.functional.cross_entropy(head(x[idx]), y[idx])
                loss = loss + l2 * (head.reduce.weight.square().sum() + head.classify.weight.square().sum())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    head.eval()

    @torch.no_grad()
    def predict(z: torch.Tensor) -> torch.Tensor:
        return head(z.float()).argmax(1)

    return predict


def classify_features(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                      classifier: str = "logistic", num_classes: int | None = None, seed: int = 0) -> dict:
    """Fit ``classifier`` on standardised training features; accuracy on the test features."""
    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    if len(train_x) == 0 or len(test_x) == 0:
        raise InputError(f"empty split: {len(train_x)} training and {len(test_x)} test items")
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    tx, ex = (train_x - mean) / std, (test_x - mean) / std
    if classifier == "logistic":
        if len(train_y.unique()) < 2:
            raise InputError("logistic regression needs at least 2 classes in the training split")
        predict = fit_logistic(tx, train_y, seed=seed)
    else:
        predict = fit_official(tx, train_y, num_classes, seed=seed)
    pred = predict(ex).long()
    return {"accuracy": float((pred == test_y).double().mean()), "chance": 1.0 / num_classes,
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
        num_windows: test windows averaged per item.
        train_windows: training windows averaged per item (1, the centre window: the paper's
            protocol; see the module docstring for when to match ``num_windows``).
        splits: optional ``[(train_source, test_source), ...]``; when given, ``train_source``
            and ``test_source`` must be None and the accuracy is the mean over the splits.
    Returns:
        ``{"accuracy", "chance", "num_classes", "num_train", "num_test", "classifier",
        "modality", "split_accuracies", "train_windows", "test_windows"}``; accuracy (the mean over
        splits) is a fraction in [0, 1].
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
        test_x, test_y, _ = frozen_features(model, test, num_windows=num_windows, classes=classes, **kw)
        num_classes = len(classes) if classes else None
        for c in classifiers:
            res = classify_features(train_x, train_y, test_x, test_y, classifier=c, num_classes=num_classes, seed=seed)
            log.info("linear probe (%s, %s): accuracy %.4f on %d test items", modality, c, res["accuracy"],
                     res["num_test"])
            per_classifier[c].append(res)
    outs = {}
    for c, results in per_classifier.items():
        out = dict(results[0])
        out.update(classifier=c, modality=modality, accuracy=sum(r["accuracy"] for r in results) / len(results),
                   split_accuracies=[r["accuracy"] for r in results], train_windows=train_windows,
                   test_windows=num_windows)
        outs[c] = out
    return outs[classifier] if isinstance(classifier, str) else outs

