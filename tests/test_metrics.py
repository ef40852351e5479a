"""Metrics of the downstream protocols against hand-computed values and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from vatt.errors import InputError
from vatt.eval.metrics import (
    average_precision,
    d_prime,
    multilabel_metrics,
    recall_metrics,
    retrieval_metrics,
    retrieval_ranks,
    roc_auc,
    topk_accuracy,
)

# Rows = text queries, columns = videos; the correct video of query i is column i.
HAND = torch.tensor([
    [0.9, 0.1, 0.3, 0.2],   # correct is the best              -> rank 1
    [0.8, 0.5, 0.5, 0.1],   # 0.8 above, one tie at 0.5        -> pessimistic 3, optimistic 2
    [0.1, 0.2, 0.0, 0.3],   # every other score is above       -> rank 4
    [0.4, 0.4, 0.4, 0.4],   # all tied (a collapsed model)     -> pessimistic 4, optimistic 1
])


def test_ranks_on_hand_built_matrix_pessimistic():
    assert retrieval_ranks(HAND).tolist() == [1, 3, 4, 4]


def test_ranks_on_hand_built_matrix_optimistic():
    assert retrieval_ranks(HAND, ties="optimistic").tolist() == [1, 2, 4, 1]


def test_recall_median_mean_on_hand_built_matrix():
    m = retrieval_metrics(HAND)  # ranks 1, 3, 4, 4
    assert m["R@1"] == 0.25 and m["R@5"] == 1.0 and m["R@10"] == 1.0
    assert m["MedR"] == 3.5 and m["MeanR"] == 3.0
    m = retrieval_metrics(HAND, ks=(1, 2, 3), ties="optimistic")  # ranks 1, 2, 4, 1
    assert (m["R@1"], m["R@2"], m["R@3"]) == (0.5, 0.75, 0.75)
    assert m["MedR"] == 1.5 and m["MeanR"] == 2.0


def test_explicit_targets_and_transposed_direction():
    # 2 queries over 3 candidates with explicit targets
    sim = torch.tensor([[0.1, 0.7, 0.3], [0.9, 0.2, 0.8]])
    assert retrieval_ranks(sim, torch.tensor([2, 1])).tolist() == [2, 3]
    # video->text uses the transpose: column j's correct row is j
    assert retrieval_ranks(HAND.t()).tolist() == [1, 1, 4, 1]


def test_ranks_match_brute_force_sort_on_random_scores():
    sim = torch.randn(50, 60)
    targets = torch.randint(0, 60, (50,))
    ranks = retrieval_ranks(sim, targets)
    for i in range(50):
        order = sorted(range(60), key=lambda j: -float(sim[i, j]))
        assert ranks[i] == order.index(int(targets[i])) + 1


def test_median_of_odd_count():
    assert recall_metrics(torch.tensor([5, 1, 3]))["MedR"] == 3.0


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="2-D"):
        retrieval_ranks(torch.zeros(3))
    with pytest.raises(InputError, match="ties"):
        retrieval_ranks(HAND, ties="random")
    with pytest.raises(InputError, match="targets"):
        retrieval_ranks(HAND, torch.tensor([0, 1, 9, 0]))


def test_topk_accuracy_hand():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc["top1"] == pytest.approx(1 / 3)
    assert acc["top2"] == pytest.approx(2 / 3)
    assert acc["top5"] == 1.0


def _random_multilabel(n=200, c=7, seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.float32)
    targets[0] = 1  # every class has a positive ...
    targets[1] = 0  # ... and a negative
    scores = rng.normal(size=(n, c)) + 1.5 * targets
    return torch.from_numpy(scores), torch.from_numpy(targets), scores, targets


def test_average_precision_equals_sklearn():
    s, t, sn, tn = _random_multilabel()
    ref = [average_precision_score(tn[:, c], sn[:, c]) for c in range(tn.shape[1])]
    np.testing.assert_allclose(average_precision(s, t).numpy(), ref, rtol=1e-10)


def test_average_precision_with_tied_scores_equals_sklearn():
    s, t, sn, tn = _random_multilabel(seed=1)
    s, sn = s.round(decimals=0), np.round(sn, 0)  # many ties
    ref = [average_precision_score(tn[:, c], sn[:, c]) for c in range(tn.shape[1])]
    np.testing.assert_allclose(average_precision(s, t).numpy(), ref, rtol=1e-10)


def test_auc_equals_sklearn_with_and_without_ties():
    for seed, decimals in [(2, None), (3, 0)]:
        s, t, sn, tn = _random_multilabel(seed=seed)
        if decimals is not None:
            s, sn = s.round(decimals=decimals), np.round(sn, decimals)
        ref = [roc_auc_score(tn[:, c], sn[:, c]) for c in range(tn.shape[1])]
        np.testing.assert_allclose(roc_auc(s, t).numpy(), ref, rtol=1e-10)


def test_multilabel_metrics_equal_sklearn_macro_and_dprime():
    s, t, sn, tn = _random_multilabel(seed=4)
    m = multilabel_metrics(s, t)
    assert m["mAP"] == pytest.approx(average_precision_score(tn, sn, average="macro"), rel=1e-10)
    auc = roc_auc_score(tn, sn, average="macro")
    assert m["AUC"] == pytest.approx(auc, rel=1e-10)
    assert m["d_prime"] == pytest.approx(math.sqrt(2) * norm.ppf(auc), rel=1e-9)
    assert d_prime(0.5) == pytest.approx(0.0, abs=1e-12)


def test_class_without_positives_is_skipped_in_means():
    s, t, _, _ = _random_multilabel(seed=5)
    t[:, 0] = 0
    assert math.isnan(float(average_precision(s, t)[0]))
    m = multilabel_metrics(s, t)
    ref = multilabel_metrics(s[:, 1:], t[:, 1:])
    assert m["mAP"] == pytest.approx(ref["mAP"]) and m["AUC"] == pytest.approx(ref["AUC"])
