"""Parameter counts against the official layer arithmetic, gradients reach every parameter of every
preset, and DropToken keeps the paper's token counts on the paper geometry."""

import pytest
import torch
import torch.nn.functional as F

import vatt
from vatt.config import get_config
from vatt.model.backbones import AudioTransformer, VideoTransformer
from vatt.model.flops import build_meta, parameter_counts


def vit_params(d, mlp, layers, patch_in, table_rows):
    """Brute-force arithmetic of one ViT/WaT backbone (official layers)."""
    embed = patch_in * d + d  # Conv kernel + bias
    positions = table_rows * d + 2 * d  # tables + LayerNorm on the summed positions
    block = 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 2 * 2 * d
    return embed + positions + d + layers * block + 2 * d  # + AGG + final LayerNorm


def t5_params(word_dim, d, mlp, layers, heads, buckets=32):
    block = 4 * d * d + 2 * d * mlp + d + 2 * d  # no biases; RMSNorm (d) + LayerNorm (2d)
    return word_dim + word_dim * d + buckets * heads + layers * block + d  # AGG, proj, bias, blocks, RMSNorm


def test_parameter_counts_match_official_arithmetic_and_paper():
    counts = {name: parameter_counts(build_meta(get_config(name))) for name in ("bbs", "mbs", "lbs")}
    # exact brute-force arithmetic
    assert counts["bbs"]["video"] == vit_params(768, 3072, 12, 4 * 16 * 16 * 3, 8 + 14 + 14)
    assert counts["lbs"]["video"] == vit_params(1024, 4096, 24, 4 * 16 * 16 * 3, 8 + 14 + 14)
    assert counts["mbs"]["audio"] == vit_params(768, 3072, 12, 128, 1200)
    assert counts["mbs"]["text"] == t5_params(300, 512, 2048, 6, 8)
    # the figures in SPEC (official layers), to 0.01M
    m = lambda n: round(n / 1e6, 2)  # noqa: E731
    assert m(counts["bbs"]["video"]) == 87.45
    assert m(counts["mbs"]["video"]) == 154.34
    assert m(counts["lbs"]["video"]) == 305.50
    assert m(counts["mbs"]["audio"]) == 86.08
    assert m(counts["mbs"]["text"]) == 19.04
    assert m(counts["mbs"]["text_word_table"]) == 19.66
    # the paper's Table 7 (87.9 / 155.0 / 306.1M) within 2%; its figures are exactly ours plus a
    # 600-class linear classifier (the Kinetics-600 fine-tuning head)
    for name, paper, d in (("bbs", 87.9, 768), ("mbs", 155.0, 1024), ("lbs", 306.1, 1024)):
        assert abs(counts[name]["video"] / (paper * 1e6) - 1) < 0.02
        assert round((counts[name]["video"] + 600 * d + 600) / 1e6, 1) == paper
    # heads: official BN placement
    va, vt = 512, 256
    heads = lambda dv, da, dt: dv * va + 2 * va + va * va + 2 * va + va * vt + 2 * vt + da * va + va + dt * vt + vt  # noqa: E731
    assert counts["mbs"]["heads"] == heads(1024, 768, 512)
    for c in counts.values():
        assert c["total"] == sum(v for k, v in c.items() if k != "total")


def test_modality_agnostic_counts():
    c = parameter_counts(build_meta(get_config("ma-medium")))
    d = 1024
    block = 4 * (d * d + d) + 2 * d * 4096 + 4096 + d + 4 * d
    assert c["shared"] == 12 * block + 2 * d
    # per-modality: raw embedding + pre-projection + positions (+LN) + AGG + post-projection
    pre_post = 2 * (d * d + d)
    assert c["video"] == (3072 * d + d) + pre_post + (36 * d + 2 * d) + d
    assert c["audio"] == (128 * d + d) + pre_post + (1200 * d + 2 * d) + d
    assert c["text"] == (300 * d + d) + (d * d + d) + (16 * d + 2 * d) + d
    assert c["text_word_table"] == 2**16 * 300


def reduced(name):
    """The preset's structure on a geometry and width that run in well under a second."""
    small = {"num_layers": 2, "width": 128, "mlp_dim": 256, "num_heads": 2}
    over = {
        "video.num_frames": 8, "video.crop_size": 64, "audio.num_samples": 2560,
        "text.vocab_size": 64, "text.max_words": 8,
    }
    cfg = get_config(name)
    keys = ["shared_encoder"] if cfg.modality_agnostic else ["video_encoder", "audio_encoder", "text_encoder"]
    for k in keys:
        over[k] = small
    if cfg.modality_agnostic:
        over["post_proj_dim"] = 96
    return get_config(name, over)


def toy_loss(out):
    """A contrastive-style loss touching every output (the real objective lives in vatt.objective)."""
    def nce(x, y):
        logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).t() / 0.07
        return F.cross_entropy(logits, torch.arange(len(x)))

    text = out["text_vt"].mean(1)
    aggs = sum(out[k].pow(2).mean() for k in ("video_agg", "audio_agg", "text_agg"))
    return nce(out["video_va"], out["audio_va"]) + nce(out["video_vt"], text) + 1e-3 * aggs


@pytest.mark.parametrize("name", vatt.list_presets())
@pytest.mark.parametrize("bn", ["official", "paper"])
def test_every_parameter_gets_a_gradient(name, bn):
    cfg = reduced(name).override({"heads.bn_placement": bn})
    model = vatt.create_model(cfg).train()
    b = 4
    video = torch.rand(b, 8, 64, 64, 3) * 2 - 1
    audio = torch.rand(b, 2560) * 2 - 1
    text = torch.randint(1, 64, (b, 5, 8))
    text[..., 6:] = 0
    toy_loss(model(video=video, audio=audio, text=text)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"
    n_bn = sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert n_bn == (3 if bn == "official" else 5)


def _encoder_lengths(backbone, x):
    seen = []
    hook = backbone.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        backbone.train()(x)
        backbone.eval()(x)
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_droptoken_counts_on_the_paper_geometry(mode):
    cfg = get_config("mbs", droptoken=mode)
    with torch.device("meta"):
        video_tower, audio_tower = VideoTransformer(cfg), AudioTransformer(cfg)
        video = torch.zeros(2, 32, 224, 224, 3)
        audio = torch.zeros(2, 153600)
    # +1: the AGG token is prepended after DropToken
    assert _encoder_lengths(video_tower, video) == [784 + 1, 1568 + 1]
    assert _encoder_lengths(audio_tower, audio) == [600 + 1, 1200 + 1]
