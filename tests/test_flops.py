"""FLOP counting and `vatt model-info`."""

import json

from vatt.cli.main import main
from vatt.config import get_config
from vatt.model.flops import forward_flops, model_info


def matmul_flops(tokens, width, mlp, layers, heads_dim=None):
    """2 FLOPs per multiply-add: q/k/v/o and MLP linears plus the two attention products."""
    per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 2 * 2 * tokens * tokens * width
    return layers * per_layer


def test_tiny_flops_equal_hand_arithmetic():
    d, mlp, layers = 128, 512, 2
    video = 2 * 64 * (2 * 16 * 16 * 3) * d + matmul_flops(64 + 1, d, mlp, layers)
    audio = 2 * 100 * 128 * d + matmul_flops(100 + 1, d, mlp, layers)
    text = 2 * 17 * 64 * d + matmul_flops(16 + 1, d, mlp, layers)
    heads = 2 * (d * 512 + 512 * 512 + 512 * 256) + 2 * d * 512 + 2 * d * 256
    assert forward_flops(get_config("tiny"), 0.0) == video + audio + text + heads
    # DropToken at 0.5: 32 video and 50 audio tokens are projected and reach the encoder
    video_half = 2 * 32 * (2 * 16 * 16 * 3) * d + matmul_flops(32 + 1, d, mlp, layers)
    audio_half = 2 * 50 * 128 * d + matmul_flops(50 + 1, d, mlp, layers)
    assert forward_flops(get_config("tiny"), 0.5) == video_half + audio_half + text + heads


def test_mbs_droptoken_gflops_ratio():
    info = model_info("mbs")
    g = info["gflops"]
    assert list(g) == ["0.0", "0.25", "0.5", "0.75"]
    assert 1.9 <= g["0.0"] / g["0.5"] <= 2.3
    assert g["0.0"] > g["0.25"] > g["0.5"] > g["0.75"]
    # paper Table 5 (784.8 / 574.2 / 375.4 / 188.1) counts 2 FLOPs per multiply-add too: within 10%
    for rate, paper in (("0.0", 784.8), ("0.25", 574.2), ("0.5", 375.4), ("0.75", 188.1)):
        assert abs(g[rate] / paper - 1) < 0.10, (rate, g[rate], paper)


def test_model_info_json(capsys):
    assert main(["model-info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"preset", "params", "gflops"} and info["preset"] == "tiny"
    assert set(info["params"]) == {"video", "audio", "text", "text_word_table", "heads", "total"}
    assert all(isinstance(v, int) for v in info["params"].values())
    assert info["params"]["text_word_table"] == 4096 * 64
    assert set(info["gflops"]) == {"0.0", "0.25", "0.5", "0.75"}


def test_model_info_markdown_and_errors(capsys):
    assert main(["model-info", "tiny", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| DropToken rate | GFLOPs | Params (M) |" in out and "| 50% |" in out
    assert main(["model-info", "mbx"]) == 2
    assert "did you mean 'mbs'" in capsys.readouterr().err
    assert main(["model-info", "tiny", "--set", "video.drop_rat=0.1"]) == 2
    assert "video.drop_rate" in capsys.readouterr().err


def test_model_info_ma_medium_has_shared_part():
    info = model_info("ma-medium", drop_rates=(0.0,))
    assert set(info["params"]) == {"video", "audio", "text", "text_word_table", "shared", "heads", "total"}
    assert round(info["params"]["shared"] / 1e6, 2) == 151.16
