"""Downstream protocols (SPEC §6): zero-shot retrieval, linear probe, fine-tuning, embeddings.

``metrics`` is pure tensor code; the protocol modules load data with :mod:`vatt.data` and run a
:class:`vatt.model` model.
"""

from .metrics import (  # noqa: F401
    average_precision,
    d_prime,
    multilabel_metrics,
    recall_metrics,
    retrieval_metrics,
    retrieval_ranks,
    roc_auc,
    topk_accuracy,
)
