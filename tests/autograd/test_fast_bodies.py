"""Every faster CPU body (forward_fast/backward_fast) computes what the NumPy reference
computes: float32 within 1e-5 of the reference's own result (relative to its largest
value), and float64 gradcheck through the fast backward."""
import numpy as np
import pytest

from autograd import Tensor, backend, functional as F, gradcheck
from autograd.function import Function

# every kernel with a fast body, and a call of it on shapes that split over the threads
CASES = {
    "GELU": (lambda x: F.gelu(x), [(130, 37)]),
    "LinearCrossEntropy": (lambda x, w: F.linear_cross_entropy(x, w, np.arange(150) % 11 - 1), [(150, 16), (11, 16)]),
    "LayerNorm": (lambda x, w, b: F.layer_norm(x, w, b), [(130, 37), (37,), (37,)]),
    "CausalAttention": (lambda q, k, v: F.causal_attention(q, k, v), [(2, 3, 17, 8)] * 3),
    "Linear": (lambda x, w, b: F.linear(x, w, b), [(1, 1, 37), (29, 37), (29,)]),   # one row: W @ x
}


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_kernel_with_a_fast_body_is_checked_here():
    import autograd.kernels  # noqa: F401  (loads every kernel)
    with_fast = {c.__name__ for c in _all_subclasses(Function) if "_fast" in c._bodies}
    assert with_fast <= set(CASES), f"fast bodies without a check here: {with_fast - set(CASES)}"


def _run(fn, arrays, dtype, fast):
    backend.use_fast_kernels(fast)
    try:
        inputs = [Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
        out = fn(*inputs)
        seed = np.random.default_rng(7).standard_normal(out.shape).astype(dtype)
        out.backward(seed if out.ndim else None)
        return [out.data] + [t.grad for t in inputs]
    finally:
        backend.use_fast_kernels(True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fast_body_equals_the_reference_in_float32(name):
    fn, shapes = CASES[name]
    arrays = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    reference, fast = _run(fn, arrays, "float32", False), _run(fn, arrays, "float32", True)
    for got, want in zip(fast, reference):
        # float32 on both sides, the same formula in another order of operations: a few
        # roundings of 6e-8 each; 1e-5 of the largest value is far below any wrong term
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1e-30)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fast_body_passes_gradcheck_in_float64(name):
    fn, shapes = CASES[name]
    assert backend.fast_kernels()
    inputs = [Tensor(np.random.default_rng(i).standard_normal(s), dtype="float64", requires_grad=True)
              for i, s in enumerate(shapes)]
    assert gradcheck(fn, inputs, max_elements=40).ok


def test_switching_the_fast_bodies_off_runs_the_references(monkeypatch):
    from autograd.kernels.gelu import GELU
    calls = []
    monkeypatch.setattr(GELU, "forward", staticmethod(lambda ctx, x: calls.append("reference") or x * 1.0))
    monkeypatch.setattr(GELU, "backward", staticmethod(lambda ctx, g: (g,)))
    backend.use_fast_kernels(False)
    try:
        F.gelu(Tensor(np.ones(3)))
    finally:
        backend.use_fast_kernels(True)
    assert calls == ["reference"]


def _engine_in_a_process(prelude, env_extra=None):
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = (prelude + "import numpy as np\nfrom autograd import Tensor, optim, functional as F\n"
            "x = Tensor(np.ones((3, 8)), requires_grad=True)\n"
            "F.gelu(F.layer_norm(x, Tensor(np.ones(8)), None)).sum().backward()\nprint('ran')\n")
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_numba_the_engine_runs_the_numpy_bodies_and_says_so_once():
    out = _engine_in_a_process("import sys; sys.modules['numba'] = None\n")
    assert out.returncode == 0 and out.stdout.strip() == "ran", out.stderr
    notes = [line for line in out.stderr.splitlines() if line.startswith("note: numba is not available")]
    assert len(notes) == 1 and "pip install" in notes[0], out.stderr


def test_tinygpt_numba_0_keeps_numba_out_without_a_notice():
    out = _engine_in_a_process("", {"TINYGPT_NUMBA": "0"})
    assert out.returncode == 0 and out.stdout.strip() == "ran" and "numba" not in out.stderr, out.stderr
