"""Media files -> training batches: decoding, captions, transforms, sources, shards, demo corpus.

Public API (see docs/DATA.md)::

    cfg = DataConfig.from_model_config(model.config)
    ds = build_dataset(["corpus/pretrain", "corpus/audio_only"], cfg, tokenizer, weights=[3, 1])
    loader = make_loader(ds, batch_size=16, num_workers=2)      # Batch-contract dicts
    ds.stats()                                                  # {"good", "bad", "reasons", "masked"}
    ev = build_eval_dataset("corpus/retrieval", cfg, tokenizer, num_windows=4, num_crops=1)
"""

from .captions import Caption, read_captions, select_captions
from .config import DataConfig
from .decode import MediaError, MediaInfo, MediaReader, probe
from .loader import collate, make_loader
from .shards import ShardDataset, list_shards, split_shards
from .sources import ClipDataset, MixedStream, build_dataset, build_eval_dataset, detect_kind
from .synth import make_corpus

__all__ = [
    "Caption", "ClipDataset", "DataConfig", "MediaError", "MediaInfo", "MediaReader", "MixedStream",
    "ShardDataset", "build_dataset", "build_eval_dataset", "collate", "detect_kind", "list_shards",
    "make_corpus", "make_loader", "probe", "read_captions", "select_captions", "split_shards",
]
