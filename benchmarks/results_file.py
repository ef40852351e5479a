"""benchmarks/results/cpu.json: one file that several benchmark scripts fill, each under its own keys."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# /proc/cpuinfo flags that decide which kernels torch, oneDNN and MKL run
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]  # the first logical CPU
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def native_bf16() -> str | None:
    """None where this CPU runs bf16 matmuls natively (AVX-512 BF16 or AMX), else why not.

    Without them oneDNN and torch emulate bf16: 1.0 GFLOP/s against fp32's 150 on a Zen 3
    (AVX2), measured at n = 1024, so a 4096 bf16 matmul takes minutes and the full bf16 sections
    took an hour. There the bf16 parts of the benchmarks run at small sizes only (the figure
    still shows that ``precision=bf16`` is for GPUs and bf16-capable CPUs), and say so."""
    import torch

    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return None
    return (f"no native bf16 on this CPU (torch kernels {torch.backends.cpu.get_cpu_capability()}, no AVX-512 BF16 "
            "or AMX): bf16 is emulated, so its large bf16 measurements are skipped")


def machine_info(threads: int | None = None) -> dict:
    """What a CPU figure depends on: the CPU (vendor, model name, family/model/stepping: VMs often
    report a bare "AMD EPYC"), the ISA flags it has and the one torch dispatches to, the thread
    count, and the library versions (torch, oneDNN, MKL, numpy, glibc). Every benchmark stores it."""
    import numpy
    import torch

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    config = torch.__config__.show()

    def version(pattern: str):
        m = re.search(pattern, config)
        return m.group(1) if m else None

    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family_model_stepping": [info.get("cpu family"), info.get("model"), info.get("stepping")],
        "cores": os.cpu_count(),
        "virtual_machine": "hypervisor" in flags,
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onednn": version(r"MKL-DNN v([\d.]+)"), "mkl": version(r"Math Kernel Library Version ([\w.-]+)"),
                     "numpy": numpy.__version__, "glibc": platform.libc_ver()[1] or None},
    }


def describe_machine(m: dict | None) -> str:
    """One line for cpu.md from :func:`machine_info`'s dict."""
    if not m:
        return "machine not recorded (before issue 23)"
    fms = "/".join(str(x) for x in m.get("family_model_stepping") or [])
    v = m.get("versions", {})
    return (f"{m.get('cpu')} ({m.get('vendor')}, family/model/stepping {fms}{', VM' if m.get('virtual_machine') else ''}), "
            f"{m.get('cores')} cores, ISA flags {' '.join(m.get('isa_flags') or []) or 'none of ' + ' '.join(ISA_FLAGS)}, "
            f"torch kernels {m.get('torch_cpu_capability')}, {m.get('threads')} threads; torch {v.get('torch')}, "
            f"oneDNN {v.get('onednn')}, MKL {v.get('mkl')}, numpy {v.get('numpy')}, glibc {v.get('glibc')}")


def merge_results(update: dict, path: Path = RESULTS / "cpu.json") -> dict:
    """Read-modify-write of cpu.json under a lock file, so two scripts never lose each other's keys;
    the write itself is atomic (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(update)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return data


def publish(key: str, res: dict, quick: bool, log) -> int:
    """End of a benchmark script: print ``res`` (``--quick``: a smoke run writes nothing) or store it
    under ``key`` in cpu.json and re-render cpu.md. Returns the exit status."""
    if quick:
        print(json.dumps(res, indent=2))
        return 0
    merge_results({key: res})
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_model.py")), "--markdown-only"], check=True)
    log(f"wrote benchmarks/results/cpu.json ({key}) and cpu.md")
    return 0
