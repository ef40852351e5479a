"""Downstream protocols (SPEC §6): zero-shot retrieval, linear probe, embeddings; zero-shot
classification from class names (beyond the paper). Fine-tuning trains, so it runs on the
training engine: :mod:`vatt.train.finetune`.

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
from ..embed import embed_source, extract_features, load_embeddings, save_embeddings  # noqa: F401,E402
from .linear import linear_probe  # noqa: F401,E402
from .retrieval import retrieval_from_features, zero_shot_retrieval  # noqa: F401,E402
from .zero_shot import classify_videos, zero_shot_classify  # noqa: F401,E402
