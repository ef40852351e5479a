"""Fine-tuning on the training engine: recipe pieces, checkpoints and resume (the pretraining
contract), the audio and image tasks."""

import json
import logging
import math
import os
import signal

import numpy as np
import pytest
import torch

import vatt
from vatt.errors import CheckpointError, ConfigError
from vatt.train import checkpoint as C
from vatt.train.finetune import (
    Classifier,
    FinetuneConfig,
    FineTuning,
    ImageFolder,
    finetune,
    finetune_run,
    inverse_frequency_weights,
    mixup,
)


def test_warmup_cosine_schedule():
    from vatt.schedule import lr_at

    def factor(step):  # fine-tuning: the one schedule, cosine to 0
        return lr_at(step, peak=1.0, final=0.0, warmup_steps=10, total_steps=100)

    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)


def test_heads_start_as_the_official_ones():
    """Official init: audio Glorot-uniform kernel + bias -log(C-1) (sigmoids near the prior 1/C);
    video Glorot-normal (truncated at 2 std) kernel + zero bias."""
    model = vatt.create_model("tiny")
    d, c = model.feature_dim("audio"), 5
    audio = Classifier(model, "audio", c).head.requires_grad_(False)
    bound = (6 / (d + c)) ** 0.5
    assert torch.all(audio.bias == -math.log(c - 1))
    assert audio.weight.abs().max() <= bound and audio.weight.abs().max() > 0.9 * bound
    assert float(audio.weight.std()) == pytest.approx(bound / 3**0.5, rel=0.15)
    video = Classifier(model, "video", 400).head.requires_grad_(False)
    std = (2 / (d + 400)) ** 0.5
    assert torch.all(video.bias == 0)
    assert float(video.weight.std()) == pytest.approx(std, rel=0.05)
    assert video.weight.abs().max() <= 2 * std / 0.8796 + 1e-6


def test_inverse_frequency_weights():
    labels = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.float32)
    w = inverse_frequency_weights(labels)  # counts 4, 2, 1
    expected = torch.tensor([1 / 4, 1 / 2, 1.0])
    torch.testing.assert_close(w, expected * 3 / expected.sum())
    assert w.mean() == pytest.approx(1.0)


def test_mixup_blends_inputs_and_labels_with_one_lambda():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 10)
    y = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()
    mx, my = mixup(x, y, 5.0, g)
    torch.testing.assert_close(my.sum(1), torch.ones(6))  # still a distribution
    # recover lambda from a label row and check the input uses the same blend
    g2 = torch.Generator().manual_seed(0)
    perm = torch.randperm(6, generator=g2)
    lam = float(((mx - x[perm]) / (x - x[perm]))[0, 0]) if not torch.equal(x[0], x[perm][0]) else None
    if lam is not None:
        assert 0 < lam < 1
        torch.testing.assert_close(mx, lam * x + (1 - lam) * x[perm])
        torch.testing.assert_close(my, lam * y + (1 - lam) * y[perm])
    assert mixup(x, y, 0.0, g)[0] is x  # alpha 0 = off


def test_config_rejects_unknown_task():
    with pytest.raises(ConfigError, match="task"):
        FinetuneConfig(task="vidoe")


def _short(**kw):
    base = dict(steps=2, batch_size=4, warmup_steps=1, test_windows=1, test_crops=1, checkpoint_every=1, lr=0.01,
                log_every=1)
    base.update(kw)
    return base


def test_finetune_writes_checkpoints_and_resumes_like_pretraining(synth_corpus, tmp_path, caplog):
    lab = synth_corpus / "labelled"
    args = (str(lab / "train.csv"), str(lab / "test.csv"))
    out = tmp_path / "ft"
    res = finetune(vatt.create_model("tiny"), *args, out, **_short())
    assert set(res) >= {"top1", "top5", "chance", "num_classes", "num_test"} and res["num_classes"] == 4
    assert res["classes"] == ["circle", "square", "triangle", "cross"]
    assert [p.name for p in C.list_checkpoints(out)] == ["step_0000001", "step_0000002"]  # keep_last 2
    assert json.loads((out / "results.json").read_text())["top1"] == res["top1"]
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()
    assert [m["step"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]

    # The final model and every checkpoint are fine-tuned VATT models: the head and the class names
    # travel with them, and classify() gives the classifier's logits.
    final = vatt.load_model(out / "model")
    assert final.config.classifier.classes == res["classes"] and final.config.classifier.num_classes == 4
    ckpt_model = vatt.load_model(C.latest_checkpoint(out))
    x = torch.rand(2, 8, 64, 64, 3) * 2 - 1
    torch.testing.assert_close(final.classify(x), ckpt_model.classify(x))
    clf = Classifier(final, "video", 4, dropout=0.0).eval()  # starts from the saved head
    torch.testing.assert_close(clf(x), final.classify(x))

    # As for pretraining: an existing run is refused without --resume auto ...
    with pytest.raises(CheckpointError, match="--resume auto"):
        finetune(vatt.create_model("tiny"), *args, out, **_short(steps=3))
    # ... and continued with it, restoring weights, momentum and the step.
    caplog.set_level(logging.INFO, logger="vatt.train.engine")
    res3 = finetune(vatt.create_model("tiny"), *args, out, resume="auto", **_short(steps=3))
    assert "resumed from" in caplog.text and "step_0000002" in caplog.text
    assert res3["steps"] == 3 and C.latest_checkpoint(out).name == "step_0000003"


def test_resume_is_exact_after_an_interruption(synth_corpus, tmp_path):
    """SIGTERM-like stop at step 2 of 4, then --resume auto: the same weights as an uninterrupted run
    (data order, augmentation, dropout and the SGD momentum all restored)."""
    lab = synth_corpus / "labelled"
    args = (str(lab / "train.csv"), str(lab / "test.csv"))
    kw = _short(steps=4, checkpoint_every=3, head_dropout=0.5)

    def pretrained():  # the same starting weights for both runs
        torch.manual_seed(7)
        return vatt.create_model("tiny")

    finetune(pretrained(), *args, tmp_path / "full", **kw)

    def stop_at_2(m):  # between periodic checkpoints
        if m.get("step") == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    part = finetune_run(pretrained(), *args, tmp_path / "part", FinetuneConfig().override(kw),
                        callback=stop_at_2)
    assert (part.stopped, part.step, part.metrics) == ("signal", 2, {})
    assert not (tmp_path / "part" / "model").exists() and not (tmp_path / "part" / "results.json").exists()
    finetune(vatt.create_model("tiny"), *args, tmp_path / "part", resume="auto", **kw)
    a = vatt.load_model(tmp_path / "full" / "model").state_dict()
    b = vatt.load_model(tmp_path / "part" / "model").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full = [json.loads(x)["loss"] for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    part = [json.loads(x)["loss"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert part == full


def test_an_old_fine_tuning_folder_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text('{"format": "vatt-finetune-2", "step": 3}')
    with pytest.raises(CheckpointError, match="older vatt"):
        finetune(vatt.create_model("tiny"), "unused", "unused", tmp_path, resume="auto", **_short())


def test_audio_task_runs_multilabel_recipe(synth_corpus):
    lab = synth_corpus / "labelled"
    res = finetune(vatt.create_model("tiny"), str(lab / "train.csv"), str(lab / "test.csv"), None,
                   **_short(task="audio", test_windows=2))
    assert res["task"] == "audio" and 0.0 <= res["top1"] <= 1.0


def test_image_task_repeats_the_still_for_one_temporal_token(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
            d = tmp_path / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(2):
                img = np.clip(np.array(colour) + rng.normal(0, 20, (80, 100, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    model = vatt.create_model("tiny")
    depth = model.config.video.patch_size[0]
    data_cfg = __import__("vatt.data.config", fromlist=["DataConfig"]).DataConfig.from_model_config(model.config)
    item = ImageFolder(tmp_path / "test", data_cfg.replace(num_frames=depth), depth, train=False, num_crops=3)[0]
    assert item["video"].shape == (3, depth, 64, 64, 3)
    torch.testing.assert_close(item["video"][:, 0], item["video"][:, -1])  # the same still at every time
    res = finetune(model, str(tmp_path / "train"), str(tmp_path / "test"), None,
                   **_short(task="image", test_crops=3, batch_size=2))
    assert res["num_classes"] == 2 and res["num_test"] == 4


# -- learning ----------------------------------------------------------------------------------------
class _Items(torch.utils.data.Dataset):
    def __init__(self, items, classes):
        self.items, self.classes = items, classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _colour_manifests(corpus, out):
    """Manifests over the demo corpus' clips labelled by colour (attributes.csv): train = the
    pretraining and labelled-train clips, test = the labelled-test and retrieval clips."""
    import csv

    rows = list(csv.DictReader(open(corpus / "attributes.csv")))
    out.mkdir()
    for split, prefixes in (("train", ("pretrain/", "labelled/media/train")), ("test", ("labelled/media/test", "retrieval/"))):
        lines = ["path,label"] + [f"{corpus / r['path']},{r['colour']}" for r in rows
                                  if r["path"].startswith(prefixes) and r["path"].endswith(".mp4")]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return out / "train.csv", out / "test.csv"


@pytest.mark.slow
def test_finetuning_from_scratch_beats_chance_on_held_out_clips(synth_corpus, tmp_path):
    """The official video recipe (SGD, warmup-cosine, label smoothing, clip 0.75, dropout 0.5,
    12-view test) on the tiny model from scratch. The class is the object's colour: the corpus'
    own label (shape) stays at chance from scratch in any CPU budget we measured (see
    docs/EVALUATION.md); colour is learnable from scratch."""
    from vatt.data.config import DataConfig
    from vatt.data.datasets import build_eval_dataset

    train_csv, test_csv = _colour_manifests(synth_corpus, tmp_path / "colour")
    torch.manual_seed(0)
    model = vatt.create_model("tiny")
    cfg = DataConfig.from_model_config(model.config)
    # decode once: two windows per training clip become two training items
    tr = build_eval_dataset(str(train_csv), cfg, None, num_windows=2)
    train = _Items([{"video": it["video"][w], "label": it["label"], "key": it["key"]}
                    for it in (tr[i] for i in range(len(tr))) for w in range(2)], tr.classes)
    te = build_eval_dataset(str(test_csv), cfg, None, num_windows=4, num_crops=3, classes=tr.classes)
    test = _Items([te[i] for i in range(len(te))], tr.classes)
    # lr 0.01 (official 0.005): from scratch it reaches 0.92 vs 0.75 at 0.005 (measured, 300 steps)
    res = finetune(model, train, test, None, steps=300, batch_size=8, lr=0.01, warmup_steps=10)
    assert res["num_test"] == len(te) >= 12 and res["chance"] == 0.25
    print("fine-tuning from scratch, colour:", res)
    assert res["top1"] >= 0.5, res


def test_audio_task_on_multi_label_set_reports_map_auc_dprime(synth_corpus, tmp_path):
    """Audio-only clips tagged with two labels each (shape;colour) -> a multi-label set."""
    import csv

    rows = [r for r in csv.DictReader(open(synth_corpus / "attributes.csv")) if r["path"].startswith("audio_only/")]
    lines = ["path,label"] + [f"{synth_corpus / r['path']},{r['shape']};{r['colour']}" for r in rows]
    (tmp_path / "tags.csv").write_text("\n".join(lines) + "\n")
    res = finetune(vatt.create_model("tiny"), str(tmp_path / "tags.csv"), str(tmp_path / "tags.csv"), None,
                   **_short(task="audio", test_windows=2))
    assert {"mAP", "AUC", "d_prime"} <= set(res) and "top1" not in res
    assert 0.0 <= res["mAP"] <= 1.0 and 0.0 <= res["AUC"] <= 1.0
    assert res["num_classes"] == len({r["shape"] for r in rows} | {r["colour"] for r in rows})


def test_resuming_with_another_class_count_is_a_clear_error(synth_corpus, tmp_path):
    lab = synth_corpus / "labelled"
    finetune(vatt.create_model("tiny"), str(lab / "train.csv"), str(lab / "test.csv"), tmp_path, **_short(steps=1))
    import csv

    rows = list(csv.DictReader(open(lab / "train.csv")))
    keep = [r for r in rows if r["label"] in ("circle", "square")]
    (tmp_path / "two.csv").write_text("\n".join([",".join(rows[0].keys())] + [",".join(r.values()) for r in keep]) + "\n")
    with pytest.raises(ConfigError, match="fine-tuned on 4 classes .*this training set has 2"):
        finetune(vatt.create_model("tiny"), str(tmp_path / "two.csv"), str(lab / "test.csv"), tmp_path,
                 resume="auto", **_short(steps=2))


def test_step_clips_only_the_backbone_gradients(synth_corpus, tmp_path):
    torch.manual_seed(0)
    lab = synth_corpus / "labelled"
    cfg = FinetuneConfig().override(_short(lr=0.0, label_smoothing=0.1, head_dropout=0.0))
    eng = FineTuning(vatt.create_model("tiny"), str(lab / "train.csv"), str(lab / "test.csv"), cfg, tmp_path)
    eng.setup()
    try:
        torch.nn.init.normal_(eng.model.head.weight, std=1.0)  # large logits -> large gradients everywhere
        x, y = torch.rand(4, 8, 64, 64, 3) * 2 - 1, torch.tensor([0, 1, 2, 0])
        loss = eng.compute_loss({"video": x, "label": y})["loss"]
        loss.backward()
        total = eng._clip()

        def norm(params):
            return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))

        assert norm(eng.model.backbone.parameters()) == pytest.approx(0.75, rel=1e-4)  # clipped to 0.75
        assert norm(eng.model.head.parameters()) > 0.75  # the head is not clipped
        assert float(total) > 0.75  # the logged norm is the one before clipping, of everything
    finally:
        eng.close()


def test_larger_crops_resample_positions(synth_corpus):
    lab = synth_corpus / "labelled"
    res = finetune(vatt.create_model("tiny"), str(lab / "train.csv"), str(lab / "test.csv"), None,
                   **_short(steps=1, crop_size=96))  # tiny: 64 px -> a 6x6 instead of 4x4 grid
    assert res["steps"] == 1 and res["num_test"] > 0
    from vatt.train.finetune import build_test_dataset

    item = build_test_dataset(vatt.create_model("tiny"), str(lab / "test.csv"),
                              FinetuneConfig(crop_size=96, test_windows=1, test_crops=1))[0]
    assert item["video"].shape[-3:] == (96, 96, 3)
