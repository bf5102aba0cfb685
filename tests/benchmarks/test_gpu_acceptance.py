"""benchmarks/gpu_acceptance.py without a GPU: one line saying why, exit status 1."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cuda_available

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_cuda_device_it_says_so_in_one_line():
    if cuda_available():
        pytest.skip("a CUDA device is here: the acceptance would run for minutes")
    out = subprocess.run([sys.executable, "benchmarks/gpu_acceptance.py"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_acceptance: no CUDA device"), out.stderr


def test_bench_attention_runs_both_kernels_in_the_simulator_and_they_agree():
    pytest.importorskip("numba", reason="numba-cuda runs the CUDA kernels in its simulator (the test extra)")
    out = subprocess.run([sys.executable, "benchmarks/bench_attention.py", "--device", "cuda-sim", "--batch", "1",
                          "--heads", "2", "--context", "7", "--head-size", "4", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fused softmax (P kept)" in out.stdout and "flash (no P)" in out.stdout
    worst = float(out.stdout.split("largest difference, relative to the largest value:")[1].split()[0])
    assert worst <= 1e-5, out.stdout   # float32 on both, the same sums in another order
