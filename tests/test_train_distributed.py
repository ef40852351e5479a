"""Data-parallel pretraining (the torchrun path: RANK/WORLD_SIZE/MASTER_* in the environment,
gloo on CPU) equals one process on the concatenated batch: global negatives, synced BatchNorm in
the heads, DDP gradient averaging."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from test_objective import free_port
from train_helpers import VOCAB, MemoryClips, read_metrics, tiny_config

import vatt
from vatt.train import pretrain

pytestmark = pytest.mark.distributed

# Adam's eps is raised from 1e-7 for this comparison: Adam scales each update to ~lr whatever the
# gradient's size, so rounding noise in gradients that are mathematically zero (attention key
# biases, biases in front of BatchNorm) would otherwise become full-size, sign-random steps.
# 8 clips per rank: with fewer, a BatchNorm channel after a ReLU can have almost no variance in
# the batch, and its 1 / sqrt(var + eps) turns rounding differences into visible ones.
# float64 (precision=fp64): in float32 the ranks' other summation order can flip a ReLU of the heads
# and part the runs by ~1e-3 (see REFERENCE_LOSSES in test_train.py); in float64 they agree to ~1e-14.
STEPS = ("steps=3", "batch_size=16", "optim.warmup_steps=2", "optim.lr=3e-4", "optim.eps=1e-3", "precision=fp64")


def _rank_main(rank, world, port, run_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = pretrain(tiny_config(*STEPS, deterministic=True), MemoryClips(16), run_dir, vocab=VOCAB)
    assert result.step == 3


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_rank_main, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    one = pretrain(tiny_config(*STEPS, deterministic=True), MemoryClips(16), tmp_path / "one", vocab=VOCAB)
    assert one.step == 3
    ddp, ref = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "one")
    assert [m["step"] for m in ddp] == [1, 2, 3]
    for a, b in zip(ddp, ref):
        for key in ("loss", "loss_va", "loss_vt"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), (a["step"], key)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
    a = vatt.load_model(tmp_path / "ddp").state_dict()
    b = vatt.load_model(tmp_path / "one").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    # The steps moved the weights well beyond the tolerance (the comparison is not vacuous).
    torch.manual_seed(0)
    init = vatt.create_model("tiny", vocab=VOCAB, **tiny_config(deterministic=True).model_overrides).state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a if k.endswith("weight")) > 5e-4


def _fsdp_rank_main(rank, world, port, root):
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)  # one group for both runs
    try:
        cfg = tiny_config(*STEPS, "fsdp=true", "activation_checkpointing=true", "checkpoint_every=2",
                          deterministic=True)
        assert pretrain(cfg, MemoryClips(16), f"{root}/fsdp", vocab=VOCAB).step == 3
        # Resume the sharded run from its full-state step-2 checkpoint in a fresh run directory.
        ckpt = f"{root}/fsdp/checkpoints/step_0000002"
        assert pretrain(cfg, MemoryClips(16), f"{root}/resumed", vocab=VOCAB, resume=ckpt).step == 3
    finally:
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_fsdp_run_matches_one_process_and_resumes_from_its_full_checkpoint(tmp_path):
    mp.spawn(_fsdp_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    one = pretrain(tiny_config(*STEPS, deterministic=True), MemoryClips(16), tmp_path / "one", vocab=VOCAB)
    assert one.step == 3
    fsdp, ref = read_metrics(tmp_path / "fsdp"), read_metrics(tmp_path / "one")
    assert [m["step"] for m in fsdp] == [1, 2, 3]
    for a, b in zip(fsdp, ref):
        for key in ("loss", "loss_va", "loss_vt"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), (a["step"], key)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4), a["step"]
    # The final model (and the checkpoint) hold FULL tensors, gathered from the shards.
    a = vatt.load_model(tmp_path / "fsdp").state_dict()
    b = vatt.load_model(tmp_path / "one").state_dict()
    c = vatt.load_model(tmp_path / "fsdp" / "checkpoints" / "step_0000003").state_dict()
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
        torch.testing.assert_close(c[k], a[k], rtol=0, atol=0, msg=k)
    torch.manual_seed(0)
    init = vatt.create_model("tiny", vocab=VOCAB, **tiny_config(deterministic=True).model_overrides).state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a if k.endswith("weight")) > 5e-4
    # Resumed from step 2 (weights + Adam moments loaded back into the shards): same step 3.
    resumed = read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in resumed] == [3]
    assert resumed[0]["loss"] == pytest.approx(fsdp[2]["loss"], rel=1e-6)
    r = vatt.load_model(tmp_path / "resumed").state_dict()
    for k in a:
        torch.testing.assert_close(r[k], a[k], rtol=1e-6, atol=1e-6, msg=k)
