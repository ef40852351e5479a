"""CPU speed paths (issue 14) change no result: the fused QKV projection and the oneDNN linears
give today's outputs and gradients within fp32 rounding, and the saved layout (q/k/v) is unchanged
so weights round-trip exactly between the paths. (Speed itself lives in benchmarks/bench_speed.py.)"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vatt
from vatt.model.fast_paths import FastLinear, resolve_cpu_linear, use_fast_paths
from vatt.model.layers import Attention

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [(False, "torch"), (True, "torch"), (False, "onednn"), (True, "onednn")]


def tiny_inputs(cfg, batch=2):
    g = torch.Generator().manual_seed(1)
    return {
        "video": torch.rand(batch, cfg.video.num_frames, cfg.video.crop_size, cfg.video.crop_size, 3, generator=g) * 2 - 1,
        "audio": torch.rand(batch, cfg.audio.num_samples, generator=g) * 2 - 1,
        "text": torch.randint(1, cfg.text.vocab_size, (batch, 5, cfg.text.max_words), generator=g),
    }


def run_tiny(fused, linear, preset="tiny"):
    """Outputs (eval), gradients of a training forward, and the state dict of a seeded model."""
    torch.manual_seed(0)
    model = vatt.create_model(preset, fused_qkv=fused, cpu_linear=linear)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # as initialised
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        out = model.eval()(**inputs)
    # gradients in eval mode: BatchNorm over a batch of 2 in training mode would amplify rounding
    # differences past any fp32 tolerance (the training path is covered by the loss trajectory test)
    sum(v.float().pow(2).mean() for v in model(**inputs).values()).backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None and name.rsplit(".", 2)[-2] == "qkv":
            for part, g in zip("qkv", p.grad.chunk(3)):  # compare in the saved layout
                grads[name.replace(".qkv.", f".{part}.")] = g
        elif p.grad is not None:
            grads[name] = p.grad
    return out, grads, state


def test_fast_paths_give_the_same_outputs_and_gradients_within_fp32_rounding():
    ref_out, ref_grads, ref_state = run_tiny(False, "torch")
    for fused, linear in VARIANTS[1:]:
        out, grads, state = run_tiny(fused, linear)
        # same initialisation and the same saved layout, key for key and bit for bit
        assert list(state) == list(ref_state)
        assert all(torch.equal(state[k], ref_state[k]) for k in state)
        for k in ref_out:
            torch.testing.assert_close(out[k], ref_out[k], rtol=1e-5, atol=1e-5, msg=f"{k} {fused} {linear}")
        assert grads.keys() == ref_grads.keys()
        for k, g in ref_grads.items():
            if k.endswith(".attn.k.bias"):  # zero in exact arithmetic (softmax is shift-invariant): noise
                assert grads[k].abs().max() < 1e-5 and g.abs().max() < 1e-5
                continue
            torch.testing.assert_close(grads[k], g, rtol=1e-4, atol=1e-4 * g.abs().max().item() + 1e-8,
                                       msg=f"{k} {fused} {linear}")


def test_fused_qkv_on_torch_gemm_is_bit_identical_in_inference():
    ref_out, _, _ = run_tiny(False, "torch")
    out, _, _ = run_tiny(True, "torch")
    assert all(torch.equal(out[k], ref_out[k]) for k in out)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 48), (2, 7, 48), (4, 75, 48)])  # the last: dW through dW^T
def test_onednn_linear_matches_torch_linear_forward_and_backward(bias, shape):
    torch.manual_seed(0)
    ref = nn.Linear(48, 80, bias=bias)
    fast = nn.Linear(48, 80, bias=bias)
    fast.load_state_dict(ref.state_dict())
    fast.__class__ = FastLinear
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape[:-1], 80)
    params = [x, ref.weight] + ([ref.bias] if bias else [])
    fparams = [x, fast.weight] + ([fast.bias] if bias else [])
    y_ref, y = ref(x), fast(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(y, fparams, g), torch.autograd.grad(y_ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.is_contiguous()


def test_onednn_linear_falls_back_under_autocast_and_for_other_dtypes():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    lin.__class__ = FastLinear
    x = torch.randn(3, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16  # autocast's own bf16 path, as plain nn.Linear
    lin64, x64 = lin.double(), x.double()
    assert torch.equal(lin64(x64), F.linear(x64, lin64.weight, lin64.bias))


def test_weights_move_exactly_between_fused_and_unfused_models(tmp_path):
    torch.manual_seed(0)
    fused = vatt.create_model("tiny", fused_qkv=True).eval()
    torch.manual_seed(1)
    plain = vatt.create_model("tiny", fused_qkv=False, cpu_linear="torch").eval()
    assert any(isinstance(m, Attention) and m.fused for m in fused.modules())
    plain.load_state_dict(fused.state_dict())  # fused -> q/k/v layout
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), fused.state_dict().values()))
    torch.manual_seed(2)
    again = vatt.create_model("tiny", fused_qkv=True)
    again.load_state_dict(plain.state_dict())  # q/k/v layout -> fused
    attn = again.video_backbone.encoder.blocks[0].attn
    ref = plain.video_backbone.encoder.blocks[0].attn
    assert torch.equal(attn.qkv.weight, torch.cat([ref.q.weight, ref.k.weight, ref.v.weight]))
    # save_pretrained / load_model with the default (fused) path round-trips bit for bit
    fused.save_pretrained(tmp_path / "m")
    loaded = vatt.load_model(tmp_path / "m")
    inputs = tiny_inputs(fused.config)
    with torch.no_grad():
        a, b = fused(**inputs), loaded(**inputs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_switching_paths_back_and_forth_keeps_every_value():
    torch.manual_seed(0)
    model = vatt.create_model("tiny", fused_qkv=False, cpu_linear="torch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_fast_paths(model, fused_qkv=True, cpu_linear="onednn")
    assert isinstance(model.video_backbone.encoder.blocks[0].attn.qkv, FastLinear)
    use_fast_paths(model, fused_qkv=False, cpu_linear="torch")
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert type(model.video_backbone.encoder.blocks[0].attn.q) is nn.Linear


def test_a_missing_projection_is_named_in_the_saved_layout():
    torch.manual_seed(0)
    model = vatt.create_model("tiny")
    state = model.state_dict()
    del state["video_backbone.encoder.blocks.1.attn.v.bias"]
    with pytest.raises(RuntimeError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    assert "video_backbone.encoder.blocks.1.attn.v.bias" in msg and "qkv" not in msg
    assert "Unexpected" not in msg


@pytest.mark.slow
def test_speed_benchmark_records_the_backend_of_every_figure():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--quick", "--skip",
                           "inference", "tiny"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    for dtype in ("fp32", "bf16"):
        for row in res["gemm"][dtype].values():  # a figure, or named unsupported on this CPU
            assert {"torch", "onednn"} <= row.keys() | set(row.get("unsupported", [])) and row["best_backend"] in row
    assert res["gemm"]["numpy_blas"]  # the BLAS numpy used, as threadpoolctl reports it
    tower = res["train_step"]["mbs_video_tower"]
    assert tower["best_gemm_backend"] in tower["gemm_alongside_gflop_s"]
    assert res["variants"]["baseline"] == {"fused_qkv": False, "cpu_linear": "torch", "cpu_dropout": "torch"}
    assert res["variants"]["fast"] == {"fused_qkv": True, "cpu_linear": resolve_cpu_linear("auto"), "cpu_dropout": "bits"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_and_eager_give_the_same_outputs_and_gradients():
    """torch.compile (inductor) of the default model: eval outputs and the gradients of a loss
    equal eager ones within fp32 rounding (the oneDNN linear steps aside while compiling and
    inductor picks its own kernels)."""
    torch.manual_seed(0)
    model = vatt.create_model("tiny", validate_inputs=False)  # the range check is a host sync: a graph break
    inputs = tiny_inputs(model.config)
    compiled = torch.compile(model)
    with torch.no_grad():
        ref, out = model.eval()(**inputs), compiled(**inputs)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-4 * ref[k].abs().max().item(), msg=k)
    grads = []
    for m in (model, compiled):  # eval mode (see run_tiny), so both see the same BatchNorm statistics
        model.zero_grad(set_to_none=True)
        sum(v.float().pow(2).mean() for v in m(**inputs).values()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for n, g in grads[0].items():
        if n.endswith(".qkv.bias"):  # its key third is zero in exact arithmetic (softmax is shift-invariant)
            g, other = g.chunk(3)[0::2], grads[1][n].chunk(3)[0::2]
            g, other = torch.cat(g), torch.cat(other)
        else:
            other = grads[1][n]
        torch.testing.assert_close(other, g, rtol=1e-3, atol=1e-3 * g.abs().max().item() + 1e-8, msg=n)


def test_bits_dropout_drops_each_element_independently_with_probability_p():
    """The random-bits masks have F.dropout's distribution: every element position (including each
    of the four 16-bit lanes of a 64-bit draw) is dropped with probability p, kept elements are
    scaled by 1/(1-p), masks follow torch.manual_seed, and gradients flow through the kept ones."""
    from vatt.model.fast_paths import bits_dropout

    p, n = 0.1, 400_000
    x = torch.rand(n) + 1.0  # no zeros: a zero output means dropped
    torch.manual_seed(0)
    y = bits_dropout(x, p)
    dropped = y == 0
    ref = F.dropout(x, p, training=True)  # kept elements: the same value F.dropout gives them
    both_kept = (ref != 0) & ~dropped
    assert torch.equal(y[both_kept], ref[both_kept]) and both_kept.sum() > n // 2
    sigma = (p * (1 - p) / (n / 4)) ** 0.5
    for lane in range(4):  # each quarter of the 64-bit draws
        assert abs(dropped[lane::4].double().mean().item() - p) < 5 * sigma, lane
    # neighbours are independent: P(both dropped) = p^2
    both = (dropped[:-1] & dropped[1:]).double().mean().item()
    assert abs(both - p * p) < 5 * (p * p / n) ** 0.5 * 2
    torch.manual_seed(0)
    assert torch.equal(bits_dropout(x, p), y)  # seeded
    assert not torch.equal(bits_dropout(x, p), y)  # the generator moved on
    xr = x[:1000].clone().requires_grad_()
    out = bits_dropout(xr, 0.5)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(xr.grad, (out != 0).float() * 2.0)
    for q in (0.25, 0.5, 0.9):
        assert abs((bits_dropout(x, q) == 0).double().mean().item() - q) < 0.005


def test_residual_dropout_is_the_residual_add_of_the_same_dropout_in_one_pass():
    """``residual_dropout(drop, x, y)`` (the transformer blocks' ``x + drop(y)``) equals ``x`` plus
    the very dropout ``bits_dropout`` draws for the same seed, forward and backward (the residual
    gets the gradient as is); other dropout modules, eval mode and mismatched dtypes run as written."""
    from vatt.model.fast_paths import FastDropout, bits_dropout, residual_dropout

    p = 0.25
    x = torch.randn(3, 50, 64, requires_grad=True)
    y = (torch.rand(3, 50, 64) + 1.0).requires_grad_()  # no zeros: a zero in drop(y) means dropped
    torch.manual_seed(3)
    out = residual_dropout(FastDropout(p).train(), x, y)
    torch.manual_seed(3)
    dropped = bits_dropout(y.detach(), p)
    torch.testing.assert_close(out, x + dropped, rtol=1e-6, atol=1e-6)
    assert torch.equal(out[dropped == 0], x[dropped == 0])  # dropped: the residual, bit for bit
    g = torch.randn_like(out)
    out.backward(g)
    assert torch.equal(x.grad, g)
    torch.testing.assert_close(y.grad, g * (dropped != 0) / (1 - p), rtol=1e-6, atol=1e-6)
    assert torch.equal(residual_dropout(FastDropout(p).eval(), x, y), x + y)
    torch.manual_seed(3)
    plain = residual_dropout(nn.Dropout(p).train(), x, y)  # F.dropout's own masks
    torch.manual_seed(3)
    torch.testing.assert_close(plain, x + F.dropout(y, p, training=True))
    half = residual_dropout(FastDropout(p).train(), x, y.detach().bfloat16())  # promotes as x + drop(y)
    assert half.dtype == torch.float32


def test_fast_dropout_is_a_switch_and_steps_aside_where_it_does_not_apply():
    from vatt.model.fast_paths import FastDropout

    torch.manual_seed(0)
    model = vatt.create_model("tiny", dropout=0.1)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is FastDropout for m in drops)  # the default: cpu_dropout="bits"
    use_fast_paths(model, cpu_dropout="torch")
    assert all(type(m) is nn.Dropout for m in drops)
    slow = vatt.create_model("tiny", dropout=0.1, cpu_dropout="torch")
    assert all(type(m) is nn.Dropout for m in slow.modules() if isinstance(m, nn.Dropout))
    d = FastDropout(0.3)
    x = torch.rand(1000) + 1
    assert torch.equal(d.eval()(x), x)  # eval: identity
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="cpu_dropout"):
        use_fast_paths(model, cpu_dropout="fast")


@pytest.mark.parametrize("fused", [False, True])
def test_a_fast_path_step_counts_the_same_flops_as_the_portable_one(fused):
    """torch's FlopCounterMode knows only its own matmul ops: a oneDNN step counted 0 FLOPs and
    the benchmarks' MFU divided by it. flop_counter counts the oneDNN GEMMs (forward and both
    gradients) as the portable path's."""
    from vatt.model.fast_paths import flop_counter

    counts = {}
    for linear in ("torch", "onednn"):
        torch.manual_seed(0)
        model = vatt.create_model("tiny", fused_qkv=fused, cpu_linear=linear, validate_inputs=False).train()
        with flop_counter(display=False) as counter:
            sum(v.float().pow(2).mean() for v in model(**tiny_inputs(model.config)).values()).backward()
        counts[linear] = counter.get_total_flops()
    assert counts["torch"] > 0 and counts["onednn"] == counts["torch"]


def test_the_default_linear_path_is_chosen_by_the_cpu_and_left_out_of_saved_files(tmp_path, monkeypatch):
    """cpu_linear="auto": oneDNN on AVX-512 CPUs, torch's GEMM elsewhere (measured faster on each);
    explicit choices are kept; the choice is a runtime switch, never written to config.json."""
    for capability, expected in (("AVX512", "onednn"), ("AVX2", "torch"), ("DEFAULT", "torch")):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert resolve_cpu_linear("auto") == expected
        model = vatt.create_model("tiny")
        assert model.config.cpu_linear == "auto"
        backbone = [m for m in model.tower("video").modules() if isinstance(m, nn.Linear)]  # the heads stay nn.Linear
        assert backbone and all((type(m) is FastLinear) == (expected == "onednn") for m in backbone)
        assert all(type(m) is FastLinear for m in vatt.create_model("tiny", cpu_linear="onednn").tower("video").modules()
                   if isinstance(m, nn.Linear))
        assert resolve_cpu_linear("torch") == "torch" and resolve_cpu_linear("onednn") == "onednn"
    model.save_pretrained(tmp_path / "m")
    assert "cpu_linear" not in json.loads((tmp_path / "m" / "config.json").read_text())["config"]
