"""Media files -> training batches: decoding, captions, transforms, sources, shards, demo corpus.

Modules, in the order data flows (each imports only those before it): ``index`` (what a source
string names) -> ``shards`` (tar reading/writing, local or URL) -> ``sample`` (one sample:
decode, caption, augment; the bad-sample rule) -> ``streams`` (endless resumable shard streams
and mixtures) -> ``datasets`` (clip sets, factories) -> ``loader`` (batches). Beside them: ``prepare`` (``vatt data prepare``), ``vocab`` (caption
texts for a vocabulary), ``check`` (``vatt data check``), ``synth`` (the demo corpus), ``benchmarks``
(the paper's benchmarks read in their published layouts, docs/BENCHMARKS.md).

Public API (see docs/DATA.md)::

    cfg = DataConfig.from_model_config(model.config)
    ds = build_dataset(["corpus/pretrain", "corpus/audio_only"], cfg, tokenizer, weights=[3, 1])
    loader = make_loader(ds, batch_size=16, num_workers=2)      # Batch-contract dicts
    ds.stats()                                                  # {"good", "bad", "reasons", "masked"}
    ev = build_eval_dataset("corpus/retrieval", cfg, tokenizer, num_windows=4, num_crops=1)
"""

from .captions import Caption, read_captions, select_captions
from .config import DataConfig
from .datasets import ClipDataset, build_dataset, build_eval_dataset
from .decode import MediaError, MediaInfo, MediaReader, probe
from .index import ClipRef, detect_kind, index_source, list_shards
from .loader import collate, make_loader
from .prepare import prepare_shards
from .sample import load_sample
from .streams import MixedStream, ShardDataset, split_shards
from .synth import make_corpus
from .vocab import caption_texts

__all__ = [
    "Caption", "ClipDataset", "ClipRef", "DataConfig", "MediaError", "MediaInfo", "MediaReader", "MixedStream",
    "ShardDataset", "build_dataset", "build_eval_dataset", "caption_texts", "collate", "detect_kind",
    "index_source", "list_shards", "load_sample", "make_corpus", "make_loader", "prepare_shards", "probe",
    "read_captions", "select_captions", "split_shards",
]
