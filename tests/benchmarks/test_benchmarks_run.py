"""The benchmark scripts keep working (a smoke run each; no timing is asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import torch_or_skip

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args):
    torch_or_skip()
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[parity]')")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_bench_train_reports_every_framework():
    (row,) = run_script("benchmarks/bench_train.py", "--configs", "baby-char", "--steps", "1", "--warmup", "0",
                        "--no-memory")
    for fw in ("tinygpt", "torch-eager", "torch-sdpa"):
        assert row[fw]["ms_median"] > 0 and 0 < row[fw]["mfu"] < 1.5
    assert row["time_ratio_vs_torch-sdpa"] > 0


def test_bench_train_memory_probe_measures_a_step():
    (row,) = run_script("benchmarks/bench_train.py", "--configs", "baby-char", "--memory-only")
    assert all(v > 0 for v in row["peak_added_mb"].values())


def test_bench_generate_produces_the_same_tokens_as_hugging_face():
    (row,) = run_script("benchmarks/bench_generate.py", "--configs", "small", "--repeats", "1")
    assert row["same_tokens"] is True and row["tinygpt"]["tokens_per_s"] > 0
