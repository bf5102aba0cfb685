"""benchmarks/gpu_acceptance.py without a GPU: one line saying why, exit status 1."""
import importlib.util
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


def _numba_cuda_or_skip():
    # numba itself is a dependency; its CUDA target is numba-cuda, of the test extra. Looked up,
    # not imported: numba.cuda imported here would fix this process to a real GPU or to the simulator
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed: it runs the CUDA kernels in its simulator (the test extra)")


def test_bench_attention_runs_both_kernels_in_the_simulator_and_they_agree():
    _numba_cuda_or_skip()
    out = subprocess.run([sys.executable, "benchmarks/bench_attention.py", "--device", "cuda-sim", "--batch", "1",
                          "--heads", "2", "--context", "7", "--head-size", "4", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fused softmax (P kept)" in out.stdout and "flash (no P)" in out.stdout
    worst = float(out.stdout.split("largest difference, relative to the largest value:")[1].split()[0])
    assert worst <= 1e-5, out.stdout   # float32 on both, the same sums in another order


H200_PROFILE = """where a training step's time goes: 10 steps after 2 warm-up steps; 12 layers, 768 wide
                                           forward  backward   ms/step   share
  CausalAttention                            42.17     56.62     98.80   36.3%
  Linear                                     12.00     27.17     39.17   14.4%
  LayerNorm                                  17.31     19.38     36.69   13.5%
  GELU                                        4.56      5.32      9.88    3.6%
  clip_grad_norm                                                 12.44    4.6%
  AdamW (kernels/adamw.py)                                       28.39   10.4%
  the rest: the tape, Python, batches                            15.10    5.5%
  one step                                                      272.36  100.0%
"""   # rows of the table an H200 printed on 2026-11-30 (benchmarks/README.md)


def test_the_profile_part_reads_the_step_and_the_kernels_off_the_printed_table():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_acceptance import profile_figure
    finally:
        sys.path.pop(0)
    assert profile_figure(H200_PROFILE) == ("GPT-2 step 272.4 ms profiled; attention 98.8, layer norm 36.7, "
                                            "GELU 9.9, AdamW 28.4, clipping 12.4 ms")
    assert profile_figure("Traceback (most recent call last):\n  ...") is None


def test_bench_launch_runs_in_the_simulator_and_the_acceptance_reads_its_rows():
    _numba_cuda_or_skip()
    out = subprocess.run([sys.executable, "benchmarks/bench_launch.py", "--device", "cuda-sim", "--size", "16",
                          "--calls", "2", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_acceptance import launch_figure
    finally:
        sys.path.pop(0)
    figure = launch_figure(out.stdout)
    assert figure is not None, out.stdout
    names = [part.rsplit(" ", 1)[0] for part in figure.split(": ", 1)[1].split("; ")]
    assert names == ["AdamW kernel", "empty numba-cuda kernel", "CuPy: p *= 0.999"], figure
    assert launch_figure("bench_launch: no CUDA device") is None
