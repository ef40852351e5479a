"""Feature visualisation: features before/after the backbones and the t-SNE figure."""

import torch

import vatt
from vatt.tools.visualize import before_after_features, feature_figure, tsne_figure


def _models():
    ms = vatt.create_model("tiny")
    ma = vatt.create_model("tiny", shared_encoder={"num_layers": 1, "width": 64, "mlp_dim": 128, "num_heads": 2},
                           post_proj_dim=96)
    return ms, ma


def test_before_and_after_features_for_both_model_kinds():
    video = torch.rand(5, 8, 64, 64, 3) * 2 - 1
    text = torch.randint(2, 100, (5, 16))
    text[:, 10:] = 0  # padding
    for model, (d_before, d_after) in zip(_models(), [(128, 128), (64, 96)]):
        feats = before_after_features(model, {"video": video, "text": text})
        for modality in ("video", "text"):
            assert feats["before"][modality].shape == (5, d_before)
            assert feats["after"][modality].shape == (5, d_after)
        # "after" is exactly the AGG output of the model
        torch.testing.assert_close(feats["after"]["video"], model(video=video)["video_agg"])


def test_padding_words_do_not_change_the_before_features():
    model = _models()[0].eval()
    text = torch.randint(2, 100, (1, 16))
    text[:, 6:] = 0
    feats = before_after_features(model, {"text": text})["before"]["text"]
    captured = {}
    hook = model.text_backbone.blocks[0].register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    model(text=text)
    hook.remove()
    torch.testing.assert_close(feats, captured["x"][:, 1:7].mean(1))  # the 6 real words only


def test_side_by_side_figure_is_a_png(tmp_path):
    video = torch.rand(8, 8, 64, 64, 3) * 2 - 1
    text = torch.randint(2, 100, (8, 16))
    ms, ma = _models()
    path = feature_figure({"modality-specific": ms, "modality-agnostic": ma}, video, text, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    single = tsne_figure({"a": torch.randn(4, 3), "b": torch.randn(5, 7)}, tmp_path / "g.png")  # widths padded
    assert single.is_file()
