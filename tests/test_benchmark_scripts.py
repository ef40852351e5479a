"""The prepared GPU check must keep working on machines without a GPU: its --smoke mode runs the
same step code (model, objective, backward, Adam, FLOP counting, results file) on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _smoke(script: str, tmp_path) -> dict:
    """Run a GPU benchmark script's ``--smoke`` mode on this CPU; its JSON result."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_gpu_step_smoke_writes_results(tmp_path):
    result = _smoke("gpu_step.py", tmp_path)["tiny_b2_bf16"]
    assert result["clips_per_second"] > 0 and result["step_gflop"] > 0
    # On a GPU MFU is against the card's data-sheet peak; in --smoke on a CPU it is against a 512^3
    # bf16 matmul timed on the spot, which is no peak on CPUs without native bf16 (an AVX2 EPYC gave
    # 2.9), so here only its presence is checked.
    assert result["mfu"] > 0 and result["mfu_against"] == "measured matmul peak"
    assert result["final_loss"] > 0


def test_gpu_data_check_smoke_delivers_float_clips_from_uint8_workers(tmp_path):
    result = _smoke("gpu_data.py", tmp_path)["data"]
    assert result["clips_per_second"] > 0 and result["video_dtype_from_workers"] == "torch.uint8"
    assert result["output_dtype"] == "torch.float32"


def test_search_bench_smoke_writes_latencies(tmp_path):
    out = tmp_path / "search.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_bench.py"), "--sizes", "500",
                           "--queries", "3", "--out", str(out), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    (size,) = result["sizes"]
    assert size["windows"] == 500 and not (tmp_path / "work" / "index_500").exists()
    assert all(size[k] > 0 for k in ("text_query_ms", "similar_query_ms", "topk_only_ms"))


def test_bench_versions_smoke_times_the_old_commit_against_this_code():
    """bench_versions imports the old commit's own src/ in a child process (not today's code)."""
    import pytest

    rev = "e10d98e"
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True).returncode:
        pytest.skip(f"commit {rev} is not in this clone (shallow?)")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_versions.py"), "--quick", "--no-compile",
                           "--workloads", "tiny_train"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["env"]["old"] == rev
    tiny = res["tiny_train"]
    assert tiny["old_s"] > 0 and tiny["new_s"] > 0  # stored rounded to 0.1 ms
    assert tiny["new_vs_old"] == pytest.approx(tiny["old_s"] / tiny["new_s"], rel=0.01)
