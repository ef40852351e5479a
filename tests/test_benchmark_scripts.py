"""The prepared GPU check must keep working on machines without a GPU: its --smoke mode runs the
same step code (model, objective, backward, Adam, FLOP counting, results file) on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_step_smoke_writes_results(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["tiny_b2_bf16"]
    assert result["clips_per_second"] > 0 and result["step_gflop"] > 0
    assert 0 < result["mfu"] < 1.5
    assert result["final_loss"] > 0
