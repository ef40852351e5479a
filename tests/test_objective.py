"""The objective equals SPEC §3 computed by brute force, and its distributed form (negatives
gathered from every rank) equals the single-process computation on the concatenated batch."""

import math
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vatt import distributed as D
from vatt.errors import ConfigError, InputError
from vatt.objective import ObjectiveConfig, VattObjective, mil_nce_loss

TAU = 0.07


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _unit(x):
    n = math.sqrt(sum(a * a for a in x))
    return [a / max(n, 1e-12) for a in x]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def brute_force_pair_loss(video, other, vmask, omask, symmetric=False):
    """SPEC §3 with plain Python loops: video [B][D], other [B][L][D], masks [B] of 0/1."""
    B, L = len(video), len(other[0])
    v = [_unit(x) for x in video]
    o = [[_unit(c) for c in cands] for cands in other]
    total, count = 0.0, 0
    for i in range(B):
        if not (vmask[i] and omask[i]):
            continue
        num = _lse([_dot(v[i], o[i][l]) / TAU for l in range(L)])
        vo = [(_dot(v[i], o[j][l]) / TAU) if omask[j] else -1e9 for j in range(B) for l in range(L)]
        ov = [(_dot(v[j], o[i][l]) / TAU) if vmask[j] else -1e9 for j in range(B) for l in range(L)]
        if symmetric:
            total += 0.5 * (_lse(vo) + _lse(ov)) - num
        else:
            total += _lse(vo + ov) - num
        count += 1
    return total / max(count, 1)


def _random_outputs(B=6, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "video_va": torch.randn(B, 12, generator=g),
        "audio_va": torch.randn(B, 12, generator=g),
        "video_vt": torch.randn(B, 8, generator=g),
        "text_vt": torch.randn(B, L, 8, generator=g),
    }
    batch = {
        "video_mask": torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.float32)[:B],
        "audio_mask": torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.float32)[:B],
        "text_mask": torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.float32)[:B],
    }
    return outputs, batch


def _brute(outputs, batch, symmetric=False):
    m = {k: [int(x) for x in v.tolist()] for k, v in batch.items()}
    va = brute_force_pair_loss(
        outputs["video_va"].double().tolist(), outputs["audio_va"].double()[:, None, :].tolist(),
        m["video_mask"], m["audio_mask"], symmetric,
    )
    vt = brute_force_pair_loss(
        outputs["video_vt"].double().tolist(), outputs["text_vt"].double().tolist(),
        m["video_mask"], m["text_mask"], symmetric,
    )
    return va, vt


@pytest.mark.parametrize("symmetric", [False, True])
def test_loss_equals_brute_force_spec_formula(symmetric):
    outputs, batch = _random_outputs()
    va, vt = _brute(outputs, batch, symmetric)
    got = VattObjective(ObjectiveConfig(symmetric=symmetric))(outputs, batch)
    assert got["loss_va"].item() == pytest.approx(va, rel=1e-5)
    assert got["loss_vt"].item() == pytest.approx(vt, rel=1e-5)
    assert got["loss"].item() == pytest.approx((va + vt) / 2, rel=1e-5)  # official weighting
    paper = VattObjective(ObjectiveConfig(weighting="paper", vt_lambda=0.3, symmetric=symmetric))(outputs, batch)
    assert paper["loss"].item() == pytest.approx(va + 0.3 * vt, rel=1e-5)


def test_masks_change_the_loss_and_defaults_mean_all_present():
    outputs, batch = _random_outputs()
    ones = {k: torch.ones_like(v) for k, v in batch.items()}
    va, vt = _brute(outputs, ones)
    no_masks = VattObjective()(outputs, {})
    assert no_masks["loss_va"].item() == pytest.approx(va, rel=1e-5)
    assert no_masks["loss_vt"].item() == pytest.approx(vt, rel=1e-5)
    masked = VattObjective()(outputs, batch)
    assert abs(masked["loss_vt"].item() - vt) > 1e-3


def test_masked_samples_receive_no_gradient_and_all_masked_is_zero():
    outputs, batch = _random_outputs()
    text = outputs["text_vt"].clone().requires_grad_(True)
    loss = mil_nce_loss(outputs["video_vt"], text, batch["video_mask"], batch["text_mask"])
    loss.backward()
    no_text = batch["text_mask"] == 0
    assert torch.all(text.grad[no_text] == 0)
    assert torch.all(text.grad[~no_text].abs().sum(dim=(1, 2)) > 0)
    # An audio-only batch (no text at all) gives a text loss of 0, not NaN.
    zero = mil_nce_loss(outputs["video_vt"], text, None, torch.zeros(6))
    assert zero.item() == 0.0


def test_loss_is_float32_and_scale_invariant_under_bf16_inputs():
    outputs, batch = _random_outputs()
    ref = VattObjective()(outputs, batch)["loss"]
    scaled = {k: 3.0 * v for k, v in outputs.items()}  # L2 normalisation inside the loss
    assert VattObjective()(scaled, batch)["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    low = VattObjective()({k: v.bfloat16() for k, v in outputs.items()}, batch)["loss"]
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=2e-2)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="weighting"):
        ObjectiveConfig(weighting="sum")
    with pytest.raises(InputError, match=r"\[B, D\]"):
        mil_nce_loss(torch.randn(4, 8), torch.randn(3, 5, 8))
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        ObjectiveConfig.from_dict({"temprature": 0.1})


# -- distributed: two gloo processes against one process on the concatenated batch ----------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world, port, outdir, symmetric):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        outputs, batch = _random_outputs(B=6)
        sl = slice(3 * rank, 3 * rank + 3)
        mine = {k: v[sl].clone().requires_grad_(True) for k, v in outputs.items()}
        my_batch = {k: v[sl] for k, v in batch.items()}
        losses = VattObjective(ObjectiveConfig(symmetric=symmetric))(mine, my_batch)
        losses["loss"].backward()
        arrays = {f"grad_{k}": v.grad.numpy() for k, v in mine.items()}
        arrays.update({k: np.array(v.item()) for k, v in losses.items()})
        np.savez(f"{outdir}/rank{rank}.npz", **arrays)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.distributed
def test_two_process_gather_matches_single_process(tmp_path, symmetric):
    world = 2
    mp.spawn(_rank_worker, args=(world, free_port(), str(tmp_path), symmetric), nprocs=world, join=True)
    outputs, batch = _random_outputs(B=6)
    full = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
    ref = VattObjective(ObjectiveConfig(symmetric=symmetric))(full, batch)
    ref["loss"].backward()
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(world)]
    for key in ("loss", "loss_va", "loss_vt"):
        # DDP averages over ranks: the mean of the per-rank losses is the global loss.
        assert np.mean([r[key] for r in ranks]) == pytest.approx(ref[key].item(), rel=1e-5)
    for k, v in full.items():
        # Each rank's gradient, averaged over ranks as DDP does (divided by the world size),
        # equals the single-process gradient w.r.t. that rank's rows.
        got = np.concatenate([r[f"grad_{k}"] for r in ranks]) / world
        np.testing.assert_allclose(got, v.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_single_process_needs_no_process_group():
    assert not D.is_distributed() and D.get_world_size() == 1 and D.get_rank() == 0
    x = torch.randn(3, 4, requires_grad=True)
    assert D.gather_with_grad(x) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sync_batchnorm_conversion_keeps_weights_statistics_and_dtype(dtype):
    """Multi-rank runs swap BatchNorm1d for SyncBatchNorm: same weights, running statistics and
    dtype (a float64 run kept float32 norms before, and its ranks no longer matched one process)."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6)).to(dtype)
    model.train()(torch.randn(8, 4, generator=g, dtype=dtype))  # non-trivial running statistics
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5, generator=g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    D.convert_sync_batchnorm(model)
    assert isinstance(model[1], D.SyncBatchNorm)
    for k, v in model.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
