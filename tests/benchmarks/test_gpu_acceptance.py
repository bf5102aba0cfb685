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
