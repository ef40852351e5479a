"""The paper's benchmark table rows: which reader, which protocol, the published numbers and a
compute estimate for each (``vatt bench list``).

Published numbers are those of the official code's README (fine-tuned checkpoints: top-1/top-5,
mAP/AUC/d′) and of the paper (ImageNet top-1, zero-shot R@10, SPEC §7). Linear-probe rows
(UCF101, HMDB51, ESC-50) carry no number here: they are not in our SPEC, and we do not quote
what we have not checked — add them from the paper's Table 6 once verified.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError, nearest

PROTOCOLS = ("finetune", "linear", "retrieval")
# Forward GFLOPs of one test view at the paper geometry (32x224² video, 153,600 audio samples),
# counted by vatt.model.flops.forward_flops at DropToken 0 (video tower + heads / audio tower).
VIDEO_GFLOPS = {"bbs": 364.7, "mbs": 604.7, "lbs": 1199.5, "ma-medium": 608.0}
AUDIO_GFLOPS = {"bbs": 257.4, "mbs": 257.4, "lbs": 257.4, "ma-medium": 436.4}
# An estimate, not a measurement: H100 bf16 dense peak at 40% MFU; GPU compute only (decoding the
# videos needs ~10 CPU cores per GPU, docs/DATA.md); training = 3x the forward.
GPU_FLOPS = 989e12 * 0.4
FINETUNE_BATCH = 64  # assumed global batch of the official fine-tuning runs (not in the README)


@dataclass(frozen=True)
class PaperRow:
    """One published result: the model it belongs to and its metrics (percent; d′ as is)."""

    model: str
    preset: str
    metrics: dict


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: how to read it and how the paper evaluates it.

    ``protocol``: ``"finetune"`` (train the backbone and a head, multi-view test), ``"linear"``
    (frozen AGG features, mean over ``splits``) or ``"retrieval"`` (zero-shot text→video).
    ``task``: the fine-tuning recipe (``video``, ``audio``, ``image``) or the probed modality.
    ``subsets``: the reader's (train, test) subset names; ``splits``: the split / fold numbers
    averaged by the protocol (empty when the benchmark has one split).
    ``train_steps``: fine-tuning steps of the official checkpoints (for the cost estimate);
    ``sizes``: (train items, test items) of the full benchmark, for the cost estimate.
    """

    name: str
    title: str
    protocol: str
    task: str
    reader: str
    subsets: tuple[str, str]
    url: str
    layout: str
    metric: str
    paper: tuple[PaperRow, ...] = ()
    splits: tuple[int, ...] = ()
    train_steps: int = 0
    sizes: tuple[int, int] = (0, 0)
    notes: str = ""

    def describe_protocol(self) -> str:
        if self.protocol == "finetune":
            views = {"video": "4 windows x 3 crops", "audio": "4 windows", "image": "3 crops"}[self.task]
            metric = "mAP/AUC/d'" if self.task == "audio" else "top-1/top-5"
            return f"fine-tune ({self.task} recipe), {views} at test, {metric}"
        if self.protocol == "linear":
            what = f"mean of {len(self.splits)} {'folds' if self.name == 'esc50' else 'splits'}"
            return f"linear probe on frozen {self.task} AGG (1 window train, 4 test), {what}"
        return "zero-shot text->video retrieval in S_vt, 4 windows, R@1/5/10 and median rank"

    def estimated_gpu_hours(self, preset: str | None = None) -> float:
        """GPU-hours of compute for the row's default model (see the module constants)."""
        preset = preset or (self.paper[0].preset if self.paper else "mbs")
        train, test = self.sizes
        if self.task == "audio":
            fwd, views = AUDIO_GFLOPS.get(preset, AUDIO_GFLOPS["mbs"]), 4
        elif self.task == "image":  # one temporal token: an eighth of a 32-frame clip's tokens
            fwd, views = VIDEO_GFLOPS.get(preset, VIDEO_GFLOPS["mbs"]) / 8, 3
        else:
            fwd, views = VIDEO_GFLOPS.get(preset, VIDEO_GFLOPS["mbs"]), 12 if self.protocol == "finetune" else 4
        flops = test * views * fwd * 1e9
        folds = max(1, len(self.splits))
        if self.protocol == "finetune":
            flops += self.train_steps * FINETUNE_BATCH * 3 * fwd * 1e9
        elif self.protocol == "linear":
            flops = folds * (train + test * views) * fwd * 1e9
        return flops / GPU_FLOPS / 3600


def _kinetics(version: int, rows, size) -> Benchmark:
    return Benchmark(
        f"kinetics{version}", f"Kinetics-{version}", "finetune", "video", "kinetics", ("train", "val"),
        "https://github.com/cvdfoundation/kinetics-dataset", "train.csv, validate.csv + <youtube_id>_<start:06d>_<end:06d>.mp4 "
        "(flat or <split>/<label>/)", "top1", tuple(rows), train_steps=100_000, sizes=size,
        notes="test = the validate split (official); classes = sorted labels of train.csv")


def _rows(values: dict) -> list[PaperRow]:
    names = {"bbs": "VATT-Base", "mbs": "VATT-Medium", "lbs": "VATT-Large", "ma-medium": "VATT-MA-Medium"}
    return [PaperRow(names[p], p, m) for p, m in values.items()]


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    _kinetics(400, _rows({"lbs": {"top1": 82.1, "top5": 95.5}, "mbs": {"top1": 81.1, "top5": 95.6},
                          "bbs": {"top1": 79.6, "top5": 94.9}, "ma-medium": {"top1": 79.9, "top5": 94.9}}), (240_000, 20_000)),
    _kinetics(600, _rows({"lbs": {"top1": 83.6, "top5": 96.6}, "mbs": {"top1": 82.4, "top5": 96.1},
                          "bbs": {"top1": 80.5, "top5": 95.5}, "ma-medium": {"top1": 80.8, "top5": 95.5}}), (390_000, 30_000)),
    _kinetics(700, _rows({"lbs": {"top1": 72.7, "top5": 90.5}}), (545_000, 35_000)),
    Benchmark("mit", "Moments in Time", "finetune", "video", "moments", ("train", "val"),
              "http://moments.csail.mit.edu/", "trainingSet.csv, validationSet.csv, moments_categories.txt, "
              "training/<label>/, validation/<label>/", "top1",
              tuple(_rows({"lbs": {"top1": 41.1, "top5": 67.7}, "mbs": {"top1": 39.5, "top5": 68.2},
                           "bbs": {"top1": 38.7, "top5": 67.5}, "ma-medium": {"top1": 37.8, "top5": 65.9}})),
              train_steps=150_000, sizes=(800_000, 33_900)),
    Benchmark("audioset", "AudioSet", "finetune", "audio", "audioset", ("train", "eval"),
              "https://research.google.com/audioset/download.html",
              "class_labels_indices.csv, {balanced,unbalanced}_train_segments.csv, eval_segments.csv + <YTID>[_<start>].wav",
              "mAP", (PaperRow("VATT-Base (WaT-Base)", "bbs", {"mAP": 39.4, "AUC": 97.1, "d_prime": 2.895}),
                      PaperRow("VATT-MA-Medium (WaT-Medium)", "ma-medium", {"mAP": 39.3, "AUC": 97.0, "d_prime": 2.884})),
              train_steps=50_000, sizes=(2_000_000, 20_000),
              notes="train = balanced + unbalanced lists (whichever are present); --split balanced for the 20k set"),
    Benchmark("imagenet", "ImageNet", "finetune", "image", "imagenet", ("train", "val"),
              "https://image-net.org/download.php (or Kaggle imagenet-object-localization-challenge)",
              "train/<wnid>/*.JPEG, val/<wnid>/ or val/*.JPEG + LOC_val_solution.csv", "top1",
              (PaperRow("VATT-Base (video weights)", "bbs", {"top1": 78.7}),), train_steps=100_000,
              sizes=(1_281_167, 50_000), notes="a still image = one temporal token (4 repeated frames)"),
    Benchmark("ucf101", "UCF101", "linear", "video", "ucf101", ("train", "test"),
              "https://www.crcv.ucf.edu/data/UCF101.php",
              "UCF-101/<Class>/*.avi + ucfTrainTestlist/{classInd,trainlist0K,testlist0K}.txt", "accuracy",
              splits=(1, 2, 3), sizes=(9_537, 3_783)),
    Benchmark("hmdb51", "HMDB51", "linear", "video", "hmdb51", ("train", "test"),
              "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/",
              "<class>/*.avi + testTrainMulti_7030_splits/<class>_test_splitK.txt", "accuracy",
              splits=(1, 2, 3), sizes=(3_570, 1_530)),
    Benchmark("esc50", "ESC-50", "linear", "audio", "esc50", ("train", "test"),
              "https://github.com/karolpiczak/ESC-50", "meta/esc50.csv + audio/*.wav", "accuracy",
              splits=(1, 2, 3, 4, 5), sizes=(1_600, 400)),
    Benchmark("youcook2", "YouCook2", "retrieval", "video", "youcook2", ("training", "validation"),
              "http://youcook2.eecs.umich.edu/", "youcookii_annotations_trainval.json + raw_videos/validation/<recipe>/<id>.mp4",
              "R@10", (PaperRow("VATT-MBS", "mbs", {"R@10": 45.5}),), sizes=(0, 3_300),
              notes="each validation segment read from its full video by start/end; its sentence is the query"),
    Benchmark("msrvtt", "MSR-VTT", "retrieval", "video", "msrvtt", ("", "1k-A"),
              "https://www.robots.ox.ac.uk/~maxbain/frozen-in-time/data/MSRVTT.zip",
              "MSRVTT_JSFUSION_test.csv (1k-A) + MSRVTT_data.json + <video_id>.mp4", "R@10",
              (PaperRow("VATT-MBS", "mbs", {"R@10": 29.7}),), sizes=(0, 1_000),
              notes="1k-A videos; --captions 1k-A (one sentence per video, default) or all (20 per video)"),
]}


def get_benchmark(name: str) -> Benchmark:
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"k400": "kinetics400", "k600": "kinetics600", "k700": "kinetics700", "momentsintime": "mit",
               "msrvtt": "msrvtt", "esc": "esc50"}
    key = aliases.get(key, key)
    if key not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}{nearest(name, BENCHMARKS)}; `vatt bench list` shows them all")
    return BENCHMARKS[key]
