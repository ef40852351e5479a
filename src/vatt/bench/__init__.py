"""The paper's tables, one call each (``vatt bench``): the registry of benchmark rows
(:mod:`vatt.bench.registry`: reader, protocol, published numbers, cost estimate) and the runner
(:mod:`vatt.bench.run`) that reads a downloaded benchmark in its own layout
(:mod:`vatt.data.benchmarks`) and runs the row's protocol with the generic :mod:`vatt.eval`
functions. See docs/BENCHMARKS.md.
"""

from .registry import BENCHMARKS, Benchmark, get_benchmark  # noqa: F401
from .run import run_benchmark  # noqa: F401
