"""Zero-shot retrieval, linear probe and multi-view testing on the demo corpus and on hand-built features."""

import pytest
import torch

import vatt
from vatt.data.config import DataConfig
from vatt.data.datasets import build_eval_dataset
from vatt.errors import InputError
from vatt.embed import extract_features
from vatt.train.finetune import Classifier, predict_views
from vatt.eval.linear import classify_features, linear_probe
from vatt.eval.retrieval import (
    centre_caption,
    retrieval_from_features,
    text_queries,
    window_similarity,
    zero_shot_retrieval,
)


@pytest.fixture(scope="module")
def tiny(synth_tokenizer):
    torch.manual_seed(0)
    return vatt.create_model("tiny", vocab=synth_tokenizer).eval()


# -- window averaging ----------------------------------------------------------------------------
def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_window_similarity_matches_brute_force_both_variants():
    q, c = torch.randn(3, 2, 8), torch.randn(4, 5, 8)
    emb = window_similarity(q, c, "embeddings")
    sim = window_similarity(q, c, "similarities")
    for i in range(3):
        for j in range(4):
            qv, cv = _unit(_unit(q[i]).mean(0)), _unit(_unit(c[j]).mean(0))
            assert emb[i, j] == pytest.approx(float(qv @ cv), abs=1e-6)
            pairs = [float(_unit(q[i, a]) @ _unit(c[j, b])) for a in range(2) for b in range(5)]
            assert sim[i, j] == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    # the two variants differ in general (re-normalisation of the mean)
    assert not torch.allclose(emb, sim)


def test_centre_caption_picks_middle_distinct_caption():
    a, b, c, d, e = (torch.full((16,), i) for i in range(1, 6))
    assert centre_caption(torch.stack([a, b, c, d, e])) == 2
    assert centre_caption(torch.stack([a, a, a, a, a])) == 0
    assert centre_caption(torch.stack([a, b, c, a, b])) == 1  # 3 captions repeated to fill 5
    assert centre_caption(torch.stack([a, b, a, b, a])) == 0


def _aligned_features(n=6, windows=4, dim=16, noise=0.05):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(n, dim, generator=g)
    video = base[:, None] + noise * torch.randn(n, windows, dim, generator=g)
    text = torch.randn(n, 5, dim, generator=g)
    text[:, 2] = base + noise * torch.randn(n, dim, generator=g)  # the centre caption matches
    ids = torch.arange(n * 5 * 16).reshape(n, 5, 16)  # 5 distinct captions -> centre index 2
    return {"video_vt": video, "text_vt": text, "text_ids": ids, "text_mask": torch.ones(n),
            "video_va": video.clone(), "audio_va": base[:, None].repeat(1, windows, 1), "audio_mask": torch.ones(n)}


def test_retrieval_on_aligned_features_is_perfect_and_uses_centre_caption():
    feats = _aligned_features()
    for average in ("embeddings", "similarities"):
        res = retrieval_from_features(feats, average=average)
        for direction in ("text_to_video", "video_to_text", "audio_to_video", "video_to_audio"):
            assert res[direction]["R@1"] == 1.0 and res[direction]["MedR"] == 1.0
        assert res["num_videos"] == 6
    # caption 0 is random: retrieval is no longer perfect
    assert retrieval_from_features(feats, caption=0)["text_to_video"]["R@1"] < 1.0
    assert text_queries(feats).shape == (6, 1, 16)


def test_retrieval_leaves_out_items_without_audio_or_text():
    feats = _aligned_features()
    feats["audio_mask"][:] = 0
    feats["text_mask"][0] = 0
    res = retrieval_from_features(feats)
    assert "audio_to_video" not in res and res["num_text_queries"] == 5
    with pytest.raises(InputError, match="caption"):
        retrieval_from_features(feats, caption=7)


# -- on the demo corpus --------------------------------------------------------------------------
def test_zero_shot_retrieval_on_demo_corpus_reports_all_directions(tiny, synth_corpus):
    src = str(synth_corpus / "retrieval")
    n = len(list((synth_corpus / "retrieval").glob("*.mp4")))
    res = zero_shot_retrieval(tiny, src, num_windows=2, average="similarities")
    assert res["num_videos"] == n
    for direction in ("text_to_video", "video_to_text", "audio_to_video", "video_to_audio"):
        m = res[direction]
        assert set(m) == {"R@1", "R@5", "R@10", "MedR", "MeanR"}
        assert 0.0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 1.0
        assert 1.0 <= m["MedR"] <= n and 1.0 <= m["MeanR"] <= n


def test_extract_features_folds_views_back(tiny, synth_corpus):
    cfg = DataConfig.from_model_config(tiny.config)
    ds = build_eval_dataset(str(synth_corpus / "retrieval"), cfg, tiny.tokenizer, num_windows=2, num_crops=3)
    feats = extract_features(tiny, ds, outputs=["video_vt", "audio_va", "text_vt"], batch_size=4)
    n = len(ds)
    assert feats["video_vt"].shape == (n, 6, 256)
    assert feats["audio_va"].shape == (n, 2, 512)
    assert feats["text_vt"].shape == (n, 5, 256) and feats["text_ids"].shape == (n, 5, 16)
    # the flat batch gives the same vectors as one view at a time
    item = ds[0]
    direct = tiny(video=item["video"])["video_vt"]
    torch.testing.assert_close(feats["video_vt"][0], direct, rtol=1e-4, atol=1e-5)


# -- linear probe ----------------------------------------------------------------------------------
def test_classifiers_separate_separable_blobs():
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 10, generator=g)
    y = torch.arange(90) % 3
    x = centres[y] + 0.3 * torch.randn(90, 10, generator=g)
    for clf in ("logistic", "official"):
        res = classify_features(x[:60], y[:60], x[60:], y[60:], classifier=clf, num_classes=3)
        assert res["accuracy"] == 1.0 and res["chance"] == pytest.approx(1 / 3)
    # shuffled labels: nothing to learn, accuracy near chance
    res = classify_features(x[:60], y[torch.randperm(60, generator=g)], x[60:], y[60:], classifier="logistic")
    assert res["accuracy"] < 0.7


def test_official_head_regularises_only_its_output_kernel():
    """The official head's L2(0.1) sits on the ``cls`` kernel alone: the reduce kernel's gradient is
    the cross-entropy's, the output kernel's adds 2 * 0.1 * w."""
    from vatt.eval.linear import LowRankClassifier, official_loss

    g = torch.Generator().manual_seed(0)
    head = LowRankClassifier(12, 5, hidden=8, dropout=0.0, generator=g)
    x, y = torch.randn(10, 12, generator=g), torch.randint(0, 5, (10,), generator=g)
    ce = torch.nn.functional.cross_entropy(head(x), y)
    plain = torch.autograd.grad(ce, [head.reduce.weight, head.classify.weight])
    full = torch.autograd.grad(official_loss(head, x, y, l2=0.1), [head.reduce.weight, head.classify.weight])
    torch.testing.assert_close(full[0], plain[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(full[1], plain[1] + 0.2 * head.classify.weight, rtol=1e-6, atol=1e-7)


def test_official_head_starts_from_keras_glorot_normal_and_zero_biases():
    from vatt.eval.linear import LowRankClassifier

    head = LowRankClassifier(1024, 101, generator=torch.Generator().manual_seed(0))
    for w in (head.reduce.weight, head.classify.weight):
        fan_out, fan_in = w.shape
        target = (2 / (fan_in + fan_out)) ** 0.5  # the standard deviation after truncation
        assert w.std().item() == pytest.approx(target, rel=0.04)
        assert w.abs().max().item() <= 2 * target / 0.87962566103423978 + 1e-7  # truncated at 2 sigma
    assert not head.reduce.bias.any() and not head.classify.bias.any()


def test_official_head_trains_whole_shuffled_epochs_with_a_smaller_last_batch(monkeypatch):
    """Keras fit(epochs=E, batch_size=64, shuffle=True): every epoch sees every item once, in
    batches 64, 64, ..., rest; E * ceil(N / 64) steps."""
    import vatt.eval.linear as linear_mod

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(130, 6, generator=g), torch.randint(0, 3, (130,), generator=g)
    seen = []
    real = linear_mod.official_loss
    monkeypatch.setattr(linear_mod, "official_loss", lambda head, xb, yb, l2: seen.append(xb.clone()) or real(
        head, xb, yb, l2))
    linear_mod.fit_official(x, y, 3, epochs=3)
    assert [len(b) for b in seen] == [64, 64, 2] * 3
    rows = {tuple(r.tolist()): i for i, r in enumerate(x)}
    epochs = [[rows[tuple(r.tolist())] for b in seen[e * 3 : e * 3 + 3] for r in b] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(130))
    assert epochs[0] != epochs[1] != epochs[2]


def test_official_test_averages_the_windows_probabilities_and_reports_top5(monkeypatch):
    """Each test window is scored alone and the softmax probabilities averaged (official), which
    differs from averaging features (= logits for this head); top-5 against a brute-force count."""
    import vatt.eval.linear as linear_mod

    # one item, two windows with logits (-4, -4, 2) and (2, 4, -4): averaged probabilities pick
    # class 2 (0.498 vs 0.442); averaged features, i.e. logits (-1, 0, -1), pick class 1.
    w = torch.eye(3)

    def fixed(x, y, num_classes, **kw):
        return lambda z: ((z @ w.T).softmax(1), torch.arange(num_classes))

    monkeypatch.setattr(linear_mod, "fit_official", fixed)
    test_x = torch.tensor([[[-4.0, -4.0, 2.0], [2.0, 4.0, -4.0]]])
    res = linear_mod.classify_features(torch.zeros(3, 3), torch.arange(3), test_x, torch.tensor([2]),
                                       classifier="official", num_classes=3)
    assert res["accuracy"] == 1.0
    res = linear_mod.classify_features(torch.zeros(3, 3), torch.arange(3), test_x.mean(1), torch.tensor([2]),
                                       classifier="official", num_classes=3)
    assert res["accuracy"] == 0.0
    # top-5 over 9 classes, 3 windows, against a loop over the items
    g = torch.Generator().manual_seed(1)
    w = torch.randn(9, 4, generator=g)
    test_x, test_y = torch.randn(40, 3, 4, generator=g), torch.randint(0, 9, (40,), generator=g)
    res = linear_mod.classify_features(torch.zeros(9, 4), torch.arange(9), test_x, test_y, classifier="official",
                                       num_classes=9)
    top1 = top5 = 0
    for item, label in zip(test_x, test_y):
        p = sum((w @ window).softmax(0) for window in item) / 3
        rank = int((p > p[label]).sum())
        top1, top5 = top1 + (rank == 0), top5 + (rank < 5)
    assert (res["accuracy"], res["top5"]) == (top1 / 40, top5 / 40) and top5 > top1


def test_linear_probe_on_demo_corpus_averages_splits(tiny, synth_corpus):
    lab = synth_corpus / "labelled"
    split = (str(lab / "train.csv"), str(lab / "test.csv"))
    res = linear_probe(tiny, None, None, splits=[split, split], num_windows=2, classifier="official")
    assert res["num_classes"] == 4 and res["chance"] == 0.25 and res["classifier"] == "official"
    assert len(res["split_accuracies"]) == 2 and all(0.0 <= a <= 1.0 for a in res["split_accuracies"])
    assert res["accuracy"] == pytest.approx(sum(res["split_accuracies"]) / 2)
    assert res["top5"] == 1.0  # 4 classes
    with pytest.raises(InputError, match="either"):
        linear_probe(tiny, split[0], None, splits=[split])


def test_train_windows_averages_the_training_features_like_the_test_ones(tiny, synth_corpus, monkeypatch):
    """train_windows=N: each training item's feature is the mean AGG of its N evenly spaced
    windows (checked window by window); the default keeps the paper's one centre window."""
    import vatt.eval.linear as linear_mod

    lab = synth_corpus / "labelled"
    seen, tests = [], []
    real = linear_mod.classify_features
    monkeypatch.setattr(linear_mod, "classify_features", lambda tx, ty, ex, ey, **kw: seen.append(tx) or tests.append(
        ex) or real(tx, ty, ex, ey, **kw))
    for n in (1, 3):
        res = linear_probe(tiny, str(lab / "train.csv"), str(lab / "test.csv"), num_windows=2, train_windows=n)
        assert res["train_windows"] == n and res["test_windows"] == 2
    # the test features keep their windows: the classifier decides how to combine them
    assert tests[0].shape == (len(build_eval_dataset(str(lab / "test.csv"), DataConfig.from_model_config(
        tiny.config), None)), 2, seen[0].shape[1])
    cfg = DataConfig.from_model_config(tiny.config)
    tiny.eval()
    for n, train_x in zip((1, 3), seen):
        ds = build_eval_dataset(str(lab / "train.csv"), cfg, None, num_windows=n)
        with torch.no_grad():
            for i in (0, len(ds) - 1):
                windows = ds[i]["video"]
                assert windows.shape[0] == n
                per_window = torch.stack([tiny(video=windows[w : w + 1])["video_agg"][0] for w in range(n)])
                torch.testing.assert_close(train_x[i], per_window.mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(seen[0], seen[1], atol=1e-4)
    with pytest.raises(InputError, match="train_windows"):
        linear_probe(tiny, str(lab / "train.csv"), str(lab / "test.csv"), train_windows=0)


# -- multi-view test ------------------------------------------------------------------------------
class CountingClassifier(torch.nn.Module):
    """Wraps a classifier and records how many views each forward receives."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.modality, self.views_seen = inner, inner.modality, []

    def forward(self, x):
        self.views_seen.append(x.shape[0])
        return self.inner(x)


def test_multi_view_test_averages_logits_of_exactly_12_views(tiny, synth_corpus):
    cfg = DataConfig.from_model_config(tiny.config)
    ds = build_eval_dataset(str(synth_corpus / "labelled" / "test.csv"), cfg, None, num_windows=4, num_crops=3)
    clf = Classifier(tiny, "video", 4)
    torch.nn.init.normal_(clf.head.weight)  # non-zero logits (the head starts at zero)
    counting = CountingClassifier(clf)
    logits, labels = predict_views(counting, ds, batch_size=2)
    n = len(ds)
    assert sum(counting.views_seen) == 12 * n
    assert logits.shape == (n, 4) and labels.shape == (n,)
    clf.eval()
    with torch.no_grad():
        for i in range(n):
            views = ds[i]["video"]
            assert views.shape[0] == 12
            per_view = torch.stack([clf(views[v : v + 1])[0] for v in range(12)])
            torch.testing.assert_close(logits[i], per_view.mean(0), rtol=1e-4, atol=1e-5)
            assert not torch.allclose(logits[i], per_view[:11].mean(0), atol=1e-6)


def test_test_set_missing_classes_keeps_training_label_ids(tiny, synth_corpus, tmp_path):
    from vatt.eval.linear import frozen_features

    lab = synth_corpus / "labelled"
    rows = [ln.split(",") for ln in (lab / "test.csv").read_text().splitlines()[1:] if ln.strip()]
    (tmp_path / "crosses.csv").write_text("path,label\n" + "".join(f"{lab / p},{c}\n" for p, c in rows if c == "cross"))
    _, _, classes = frozen_features(tiny, str(lab / "train.csv"), num_windows=1, batch_size=16)
    assert classes == ["circle", "square", "triangle", "cross"]
    _, y, _ = frozen_features(tiny, str(tmp_path / "crosses.csv"), num_windows=1, classes=classes)
    assert y.tolist() == [3] * len(y) and len(y) >= 1
    _, y_alone, _ = frozen_features(tiny, str(tmp_path / "crosses.csv"), num_windows=1)
    assert y_alone.tolist() == [0] * len(y)  # what would happen without the training classes


def test_an_unlabelled_probe_source_is_refused_before_any_clip_is_decoded(tiny, synth_corpus, monkeypatch):
    import vatt.eval.linear as linear_mod

    monkeypatch.setattr(linear_mod, "extract_features", lambda *a, **k: pytest.fail("decoded an unlabelled set"))
    with pytest.raises(InputError, match="has no labels"):
        linear_probe(tiny, str(synth_corpus / "retrieval"), str(synth_corpus / "labelled" / "test.csv"))
