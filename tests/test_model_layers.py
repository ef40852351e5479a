"""Building blocks against brute-force references: attention, T5 buckets and bias, RMSNorm,
padding masks, heads, initialisation."""

import math

import pytest
import torch
import torch.nn.functional as F

import vatt
from vatt.config import EncoderConfig, HeadConfig
from vatt.model.heads import CommonSpaceHeads
from vatt.model.layers import Attention, RMSNorm, T5RelativeBias, relative_position_bucket


def reference_attention(att: Attention, x, mask=None):
    b, n, d = x.shape
    h, hd = att.num_heads, att.head_dim
    q = att.q(x).view(b, n, h, hd).transpose(1, 2)
    k = att.k(x).view(b, n, h, hd).transpose(1, 2)
    v = att.v(x).view(b, n, h, hd).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) * att.scale
    if mask is not None:
        scores = scores + mask
    y = scores.softmax(-1) @ v
    return att.o(y.transpose(1, 2).reshape(b, n, d))


def test_vit_attention_is_scaled_by_one_over_sqrt_64():
    att = Attention(128, 2, bias=True, scaled=True).eval()
    assert att.scale == 1 / math.sqrt(64)
    x = torch.randn(3, 7, 128)
    torch.testing.assert_close(att(x), reference_attention(att, x), rtol=1e-5, atol=1e-5)


def test_t5_attention_unscaled_with_additive_bias():
    att = Attention(128, 2, bias=False, scaled=False).eval()
    assert att.scale == 1.0 and att.q.bias is None and att.o.bias is None
    x = torch.randn(3, 7, 128) * 0.1
    bias = torch.randn(3, 2, 7, 7)
    torch.testing.assert_close(att(x, bias), reference_attention(att, x, bias), rtol=1e-5, atol=1e-5)


def reference_bucket(rel, num_buckets=32, max_distance=64):
    """T5's bidirectional bucket, written out with scalars."""
    half = num_buckets // 2
    ret = half if rel > 0 else 0
    n = abs(rel)
    exact = half // 2
    if n < exact:
        return ret + n
    large = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return ret + min(large, half - 1)


def test_relative_position_buckets_match_t5():
    rel = torch.arange(-200, 201)
    got = relative_position_bucket(rel).tolist()
    assert got == [reference_bucket(r) for r in rel.tolist()]
    assert set(got) == set(range(32)) - {16}  # 16 per direction; distance 0 only exists looking back


def test_relative_bias_shape_and_lookup():
    rb = T5RelativeBias(num_heads=4)
    bias = rb(5)
    assert bias.shape == (1, 4, 5, 5)
    for i in range(5):
        for j in range(5):
            torch.testing.assert_close(bias[0, :, i, j], rb.embedding.weight[reference_bucket(j - i)])


def test_rmsnorm():
    norm = RMSNorm(8)
    norm.weight.data = torch.arange(8.0)
    x = torch.randn(4, 8)
    ref = norm.weight * x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), ref)


@pytest.mark.parametrize("preset", ["tiny", "ma-medium"])
def test_padding_words_are_masked_as_keys(preset):
    over = {"text.vocab_size": 50}
    if preset == "ma-medium":
        over.update(shared_encoder={"num_layers": 1, "width": 128, "mlp_dim": 256, "num_heads": 2}, post_proj_dim=64)
    model = vatt.create_model(preset, **over).eval()
    ids = torch.randint(2, 50, (3, 16))
    ids[:, 5:] = 0
    table = model.backbone.text.embed.weight if preset == "ma-medium" else model.text_backbone.words.weight
    before = model(text=ids)["text_agg"]
    with torch.no_grad():
        table[0].add_(torch.randn_like(table[0]) * 5)  # change what a pad word looks like
    after = model(text=ids)["text_agg"]
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        table[ids[0, 0]].add_(1.0)  # a real word does matter
    assert not torch.allclose(model(text=ids)["text_agg"][0], before[0])
    # a sample without text (all padding, e.g. audio-only data) still gives finite outputs
    empty = model.train()(text=torch.zeros(4, 5, 16, dtype=torch.long))
    assert torch.isfinite(empty["text_vt"]).all()


def test_heads_follow_the_official_placement():
    heads = CommonSpaceHeads(64, 48, 32, HeadConfig()).eval()
    with torch.no_grad():
        for bn in (heads.video_va1.bn, heads.video_va2.bn, heads.video_vt.bn):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.normal_()
            bn.bias.normal_()
    v, a, t = torch.randn(4, 64), torch.randn(4, 48), torch.randn(4, 3, 32)

    def bn(m, x):
        return (x - m.running_mean) / torch.sqrt(m.running_var + 1e-5) * m.weight + m.bias

    h1 = bn(heads.video_va1.bn, v @ heads.video_va1.linear.weight.t())
    va = bn(heads.video_va2.bn, F.relu(h1) @ heads.video_va2.linear.weight.t())
    vt = bn(heads.video_vt.bn, F.relu(va) @ heads.video_vt.linear.weight.t())
    got_va, got_vt = heads.video(v)
    torch.testing.assert_close(got_va, va, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_vt, vt, rtol=1e-5, atol=1e-5)
    assert heads.video_va1.linear.bias is None
    torch.testing.assert_close(heads.audio(a), a @ heads.audio_va.weight.t() + heads.audio_va.bias)
    assert heads.text(t).shape == (4, 3, 256)


def test_initialisation_follows_spec():
    torch.manual_seed(0)
    model = vatt.create_model("tiny", video_encoder={"width": 256, "num_heads": 4})
    lin = model.video_backbone.encoder.blocks[0].mlp.fc1  # 256 -> 512
    bound = math.sqrt(6 / (256 + 512))
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.95 * bound  # Glorot-uniform
    assert torch.count_nonzero(lin.bias) == 0
    voxel = model.video_backbone.tokenizer.proj  # the official Conv3d, with the Conv3d's Glorot fans
    assert torch.count_nonzero(voxel.bias) == 0
    fan_in, fan_out = 3 * 2 * 16 * 16, 256 * 2 * 16 * 16
    conv_bound = math.sqrt(6 / (fan_in + fan_out))
    assert 0.95 * conv_bound < voxel.weight.abs().max() <= conv_bound
    table = model.audio_backbone.tokenizer.positions.table  # 100 x 128, trunc-normal std 128^-0.5
    std = 128**-0.5
    assert table.abs().max() <= 2 * std and 0.75 * std < table.std() < 0.95 * std
    spatial = model.video_backbone.tokenizer.positions.vertical
    assert spatial.abs().max() <= 2 * 256**-0.5


def test_encoder_sizes_come_from_config():
    cfg = EncoderConfig(num_layers=3, width=192, mlp_dim=384, num_heads=3)
    model = vatt.create_model("tiny", video_encoder=cfg.__dict__)
    enc = model.video_backbone.encoder
    assert len(enc.blocks) == 3 and enc.blocks[0].attn.num_heads == 3 and enc.blocks[0].mlp.fc1.out_features == 384


def test_agg_token_init_matches_keras_glorot_normal():
    # Keras glorot_normal on a [D] vector: truncated normal whose std *after* truncation is D^-0.5.
    from vatt.model.backbones import _agg_token

    torch.manual_seed(0)
    d = 100_000
    token = _agg_token(d).detach()
    assert 0.98 < float(token.std()) * d**0.5 < 1.02
    assert float(token.abs().max()) <= 2 * d**-0.5 / 0.87962566103423978
