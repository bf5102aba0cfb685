"""The one array-module switch."""
import ast
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd.install import install_hint
from autograd import backend

ROOT = Path(__file__).resolve().parents[2]


def test_numpy_is_the_default_backend():
    assert backend.name() == "numpy"
    assert backend.xp() is np


def test_asking_for_cupy_without_it_raises_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes "import cupy" fail, as when not installed
    with pytest.raises(autograd.BackendUnavailable) as info:
        autograd.use_backend("cupy")
    message = str(info.value)
    assert "\n" not in message
    assert "CuPy is not installed" in message
    assert install_hint("cuda") in message   # the form for this installation (tests/autograd/test_install.py)
    assert backend.name() == "numpy"  # the failed switch left the backend alone


def test_cuda_alias_fails_the_same_way(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(autograd.BackendUnavailable):
        autograd.use_backend("cuda")


def test_an_unknown_backend_name_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        autograd.use_backend("tpu")


def test_the_environment_variable_is_read_at_import():
    # "cpu" is also the default, so it would pass unread: each value must change the result
    code = "from autograd import backend; print(backend.name())"
    for wanted, expected in (("cuda-sim", "cuda-sim"), ("cpu", "numpy")):
        env = dict(os.environ, TINYGPT_DEVICE=wanted)
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected


def test_the_environment_variable_asking_for_cuda_without_cupy_names_the_fix():
    code = "import sys; sys.modules['cupy'] = None; import autograd"
    env = dict(os.environ, TINYGPT_DEVICE="cuda")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "BackendUnavailable" in out.stderr and '[cuda]" (CUDA 12)' in out.stderr


def test_only_backend_imports_cupy():
    pattern = re.compile(r"^\s*(import|from)\s+(cupy|cupyx)\b", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for package in ("autograd", "tinygpt", "demos", "benchmarks")
                 for path in (ROOT / package).rglob("*.py")
                 if path != ROOT / "autograd" / "backend.py" and pattern.search(path.read_text())]
    assert offenders == [], f"these files import CuPy directly: {offenders}"


# What tinygpt/ may take from the device's array module: making, sizing and naming arrays.
# The math on device arrays (products, reductions, exp...) is the engine's: autograd/.
ALLOWED_XP = {"empty", "zeros", "ones", "arange", "asarray", "dtype", "float32", "float64", "int64", "cuda",
              "__name__"}


def _device_calls(tree):
    """Attributes taken on backend.xp() or on a name bound to it, with their line numbers."""
    bound = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _is_xp_call(node.value)
             for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (_is_xp_call(node.value) or
                                                (isinstance(node.value, ast.Name) and node.value.id in bound)):
            yield node.attr, node.lineno


def _is_xp_call(node):
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "xp"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "backend")


def test_no_device_math_outside_autograd():
    found = [(str(path.relative_to(ROOT)), attr, line) for path in (ROOT / "tinygpt").rglob("*.py")
             for attr, line in _device_calls(ast.parse(path.read_text()))]
    assert found, "the check sees no use of backend.xp() in tinygpt/ (it should see the KV cache's)"
    math = [f"{p}:{line} xp.{attr}" for p, attr, line in found if attr not in ALLOWED_XP]
    assert not math, f"device math outside autograd/ (give it a kernel or an op): {math}"


def test_the_device_math_check_sees_a_planted_call():
    tree = ast.parse("xp = backend.xp()\ny = xp.exp(x)\nz = backend.xp().matmul(a, b)\n")
    assert sorted(attr for attr, _ in _device_calls(tree)) == ["exp", "matmul"]


def test_to_numpy_returns_a_host_array():
    a = backend.xp().arange(6).reshape(2, 3)
    out = backend.to_numpy(a)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)


def test_rng_state_round_trip_gives_the_same_draws():
    backend.seed(123)
    backend.rng().random(5)
    state = backend.get_rng_state()
    first = backend.rng().random(7)
    backend.seed(999)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.rng().random(7), first)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), vocab=st.integers(1, 12), channels=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_scatter_add_rows_equals_numpy_add_at_with_repeated_ids(n, vocab, channels, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=n)
    rows = rng.standard_normal((n, channels))
    expected = np.zeros((vocab, channels))
    np.add.at(expected, ids, rows)
    got = np.zeros((vocab, channels))
    backend.scatter_add_rows(got, ids, rows)
    # float64; only the summation order differs from add.at
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_on_linux_with_glibc_freed_memory_is_kept_for_reuse_unless_switched_off():
    import platform
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt exists on Linux with glibc only")
    assert backend.malloc_tuned
    code = "from autograd import backend; print(backend.malloc_tuned)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, TINYGPT_MALLOC="0"))
    assert out.stdout.strip() == "False", out.stderr


def _in_a_fresh_process(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=environment)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_autograd_before_numpy_shortens_openblas_idle_spin():
    code = "import os; from autograd import backend; print(backend.blas_spin_shortened, os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    assert _in_a_fresh_process(code) == ["True", "20"]


def test_a_users_openblas_thread_timeout_is_kept():
    code = "import os; from autograd import backend; print(backend.blas_spin_shortened, os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    assert _in_a_fresh_process(code, OPENBLAS_THREAD_TIMEOUT="28") == ["False", "28"]


def test_after_numpy_is_loaded_the_setting_is_not_made_since_it_could_not_apply():
    code = ("import os, numpy; from autograd import backend; "
            "print(backend.blas_spin_shortened, os.environ.get('OPENBLAS_THREAD_TIMEOUT', '-'))")
    assert _in_a_fresh_process(code) == ["False", "-"]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="OpenBLAS's x86 kernel names")
@pytest.mark.parametrize("kernels", ["Nehalem", "Sandybridge"])
def test_the_cpu_line_names_the_openblas_kernels_numpy_runs(kernels):
    if backend.blas_kernel() is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS found beside NumPy")
    code = "from autograd import backend; print(backend.blas_kernel()); print(backend.device_info())"
    environment = dict(os.environ, OPENBLAS_CORETYPE=kernels)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=environment)
    assert out.returncode == 0, out.stderr
    name, line = out.stdout.splitlines()
    assert name == kernels
    assert line.startswith("cpu (numpy ") and line.endswith(f", OpenBLAS {kernels} kernels)")
