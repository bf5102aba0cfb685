"""bench_scaling.py keeps working: a 1- and 2-rank smoke run (no timing is asserted)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_scaling_reports_tokens_per_second_and_efficiency_for_1_and_2_ranks(tmp_path):
    beside = Path(sys.executable).parent / "mpiexec"
    if importlib.util.find_spec("mpi4py") is None or not (beside.exists() or shutil.which("mpiexec")):
        pytest.skip("MPI is not installed (mpi4py and mpiexec): pip install -e '.[mpi]'")
    env = dict(os.environ, TINYGPT_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "benchmarks/bench_scaling.py", "--preset", "tiny", "--tokenizer", "char",
                             "--steps", "2", "--warmup", "1"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    one, two = report["runs"]
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert one["threads_per_rank"] == two["threads_per_rank"] == 1
    assert two["tokens_per_step"] == 2 * one["tokens_per_step"]
    assert one["tokens_per_s"] > 0 and two["tokens_per_s"] > 0
    # the docstring's definition: tokens/s(N) / (N * tokens/s(1))
    assert two["efficiency"] == pytest.approx(two["tokens_per_s"] / (2 * one["tokens_per_s"]), rel=1e-9)
    assert "| 2 |" in result.stdout
