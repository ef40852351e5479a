#!/usr/bin/env bash
# All CPU benchmarks (issue #6): model (matmul peak, train-step MFU, DropToken speed-up, vs timm,
# memory), data (decode/augment throughput, data-wait fraction) and CPU speed (issue 14: GEMM
# backends and fast paths, this code against e10d98e) and dropout's cost (issue 23). About 25 minutes
# on 2 quiet cores.
# Results: benchmarks/results/cpu.json (merged by key) and benchmarks/results/cpu.md.
#
#   bash benchmarks/run.sh            # everything
#   bash benchmarks/run.sh --quick    # smoke run of the model part, prints only
#   bash benchmarks/run.sh --threads 1   # on a busy shared machine (how the committed numbers were taken)
#
# vs_timm needs timm, installed without its dependencies (torchvision would pull another torch):
#   pip install -c constraints.txt --no-deps timm
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    . .venv/bin/activate
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python benchmarks/bench_model.py "$@"
if [ "${1:-}" != "--quick" ] && [ -f benchmarks/data_bench.py ]; then
    python benchmarks/data_bench.py
    python benchmarks/bench_speed.py
    python benchmarks/bench_dropout.py
    python benchmarks/bench_versions.py
    python benchmarks/bench_model.py --markdown-only   # re-render cpu.md with every section
fi
