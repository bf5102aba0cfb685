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
    "CausalAttention, KV cache": (lambda q, k, v: F.causal_attention(q, k, v), [(2, 3, 5, 8)] + [(2, 3, 17, 8)] * 2),
    "Linear": (lambda x, w, b: F.linear(x, w, b), [(1, 1, 37), (29, 37), (29,)]),   # one row: W @ x
    "Embedding": (lambda w: F.embedding(np.array([[3, 0, 3], [7, 3, 1]]), w), [(11, 5)]),
    "Embedding, tied to the head": (lambda w: F.linear_cross_entropy(F.embedding(np.array([3, 0, 3, 7]), w), w,
                                                                     np.array([1, 3, 3, 0])), [(11, 5)]),
}


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_kernel_with_a_fast_body_is_checked_here():
    import autograd.kernels  # noqa: F401  (loads every kernel)
    with_fast = {c.__name__ for c in _all_subclasses(Function) if "_fast" in c._bodies}
    checked = {name.split(",")[0] for name in CASES}
    assert with_fast <= checked, f"fast bodies without a check here: {with_fast - checked}"


@pytest.fixture
def two_threads(monkeypatch):
    """parallel_rows splits rows over two threads even on a one-core machine, so that the
    row offsets of each share are exercised wherever the tests run."""
    monkeypatch.setattr(backend, "host_threads", lambda: 2)


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
def test_the_fast_body_equals_the_reference_in_float32(name, two_threads):
    fn, shapes = CASES[name]
    arrays = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    reference, fast = _run(fn, arrays, "float32", False), _run(fn, arrays, "float32", True)
    for got, want in zip(fast, reference):
        # float32 on both sides, the same formula in another order of operations: a few
        # roundings of 6e-8 each; 1e-5 of the largest value is far below any wrong term
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1e-30)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_fast_body_passes_gradcheck_in_float64(name, two_threads):
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


def _close_to_reference(fn, arrays, dtype, tol):
    reference, fast = _run(fn, arrays, dtype, False), _run(fn, arrays, dtype, True)
    for got, want in zip(fast, reference):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.abs(got - want).max() <= tol * max(np.abs(want).max(), 1e-30)


# the compiled loop(s) each fast body must call on float32 input: a fast body that fell back to
# the reference would still equal it, so the equality tests above cannot see that
LOOPS = {
    "GELU": ["gelu_forward_f32", "gelu_backward"],
    "LayerNorm": ["layernorm_forward", "layernorm_backward_dx"],
    "CausalAttention": ["causal_softmax_rows_f32", "causal_softmax_backward_rows"],
    "LinearCrossEntropy": ["softmax_xent_rows_f32"],
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_each_fast_body_runs_its_compiled_loops(name, monkeypatch, two_threads):
    loops = _compiled_loops()
    calls = []
    for loop in LOOPS[name]:
        original = getattr(loops, loop)
        monkeypatch.setattr(loops, loop, lambda *a, _loop=loop, _f=original: calls.append(_loop) or _f(*a))
    fn, shapes = CASES[name]
    _run(fn, [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)], "float32", True)
    assert set(calls) == set(LOOPS[name])


@pytest.mark.parametrize("name", ["CausalAttention", "CausalAttention, KV cache"])
def test_float64_attention_runs_its_loops_and_equals_the_reference(name, monkeypatch, two_threads):
    # float64 (gradcheck's dtype) takes loops of its own: the masked max, NumPy's exp, the sums
    loops = _compiled_loops()
    calls = []
    for loop in ("scale_mask_shift", "normalize_rows", "causal_softmax_backward_rows"):
        original = getattr(loops, loop)
        monkeypatch.setattr(loops, loop, lambda *a, _loop=loop, _f=original: calls.append(_loop) or _f(*a))
    fn, shapes = CASES[name]
    arrays = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    # float64 both sides, the same formula in another order: roundings of 1e-16 each
    _close_to_reference(fn, arrays, "float64", 1e-12)
    assert set(calls) == {"scale_mask_shift", "normalize_rows", "causal_softmax_backward_rows"}


def test_the_evaluation_head_runs_the_column_loop(monkeypatch, two_threads):
    from autograd import no_grad
    loops = _compiled_loops()
    calls = []
    original = loops.logsumexp_columns_f32
    monkeypatch.setattr(loops, "logsumexp_columns_f32", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(0)
    x, w = Tensor(rng.standard_normal((150, 16)), dtype="float32"), Tensor(rng.standard_normal((11, 16)), dtype="float32")
    with no_grad():
        F.linear_cross_entropy(x, w, np.arange(150) % 11)
    assert calls


def test_one_row_through_linear_takes_the_matrix_vector_product(monkeypatch):
    from autograd.kernels.linear import Linear
    monkeypatch.setattr(Linear, "forward", staticmethod(lambda *a: pytest.fail("the one-row product fell back")))
    y = F.linear(Tensor(np.ones((1, 1, 5))), Tensor(np.ones((3, 5))), Tensor(np.ones(3)))
    np.testing.assert_array_equal(y.data, np.full((1, 1, 3), 6.0))


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-5)])
def test_without_numba_the_threaded_numpy_gelu_equals_the_reference(dtype, tol, monkeypatch, two_threads):
    """GELU's fast body without numba runs NumPy over rows split between the threads: the
    same formula in another order (float64: roundings of 1e-16; float32: of 6e-8)."""
    from autograd.kernels import cpu
    monkeypatch.setitem(cpu._state, "tried", True)
    monkeypatch.setitem(cpu._state, "loops", None)
    _close_to_reference(F.gelu, [np.random.default_rng(0).standard_normal((130, 37)) * 3], dtype, tol)


def test_the_threaded_head_rows_in_several_cache_blocks_equal_the_reference(monkeypatch, two_threads):
    """float64 rows take the NumPy softmax a few rows at a time: with 3 rows a block, each
    thread's 75 rows run through 25 blocks, some rows ignored (target -1)."""
    from autograd.kernels import linear_cross_entropy as lce
    monkeypatch.setattr(lce, "CACHE_ELEMENTS", 3 * 11)
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((150, 16)), rng.standard_normal((11, 16))]
    # the same float64 formula in another order: roundings of 1e-16, far below a lost row
    _close_to_reference(lambda x, w: F.linear_cross_entropy(x, w, np.arange(150) % 11 - 1), arrays, "float64", 1e-12)


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


def _compiled_loops():
    from autograd.kernels import cpu
    loops = cpu.compiled()
    if loops is None:
        pytest.skip("numba is not installed: the compiled loops are not in use")
    return loops


def test_the_compiled_gelu_tanh_is_within_4e_7_of_tanh_over_the_whole_float32_range():
    loops = _compiled_loops()
    # x dense in [-12, 12] gives u = k (x + c x^3) over [-71, 71]: all of the polynomial's
    # range [-9, 9] and the clamp beyond it; and a few extremes. t is compared with tanh(u)
    # computed in float64 from the same x.
    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30], dtype=np.float32)])
    y, t = np.empty_like(x), np.empty_like(x)
    loops.gelu_forward_f32(x, y, t)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        exact_t = np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3))
    # 4e-7: seven float32 roundings at t ~ 1 (6e-8 each) in Horner's rule and the division,
    # and the truncation of the continued fraction (4e-8 at the clamp); NumPy's float32
    # tanh is within 6e-8. Depth 11 instead of 12 is off by 6e-7, depth 10 by 4e-6.
    assert np.abs(t - exact_t).max() <= 4e-7
    assert np.abs(y - 0.5 * x64 * (1 + exact_t)).max() <= 4e-7 * np.abs(x64).max()


def test_the_compiled_gelu_keeps_nan_and_infinities_non_finite():
    loops = _compiled_loops()
    x = np.array([np.nan, np.inf, -np.inf, 3.0], dtype=np.float32)
    y, t = np.empty_like(x), np.empty_like(x)
    loops.gelu_forward_f32(x, y, t)
    # a diverged run must still show it: NaN stays NaN, +inf stays +inf; at -inf the
    # reference gives NaN (-inf * (1 + tanh(-inf)) = -inf * 0), and so does the loop, whose t
    # is -1 exactly there: non-finite, which is what the loss shows
    assert np.isnan(y[0]) and y[1] == np.inf and not np.isfinite(y[2])
    assert np.isclose(y[3], 0.5 * 3.0 * (1 + np.tanh(np.sqrt(2 / np.pi) * (3.0 + 0.044715 * 27))), rtol=1e-6)


def test_the_compiled_gelu_is_exactly_flat_where_tanh_rounds_to_one():
    """For |x| >= 6 (|u| > 12), tanh(u) is +-1 in float32, so GELU is x or 0 and its slope
    1 or 0 exactly, as the reference computes them. The rational tanh had reached 1 + 2e-7
    and stopped one rounding short of 1 at the clamp; the backward multiplies 1 - t^2 by
    x k (1 + 3 c x^2), and at x = -12 the slope came out 1.2e-5 instead of 0."""
    loops = _compiled_loops()
    x = np.array([-100, -12, -10, -8, -6, 6, 8, 10, 12, 100], dtype=np.float32)
    y, t, dx = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    loops.gelu_forward_f32(x, y, t)
    loops.gelu_backward(np.ones_like(x), x, t, dx)
    right = x > 0
    np.testing.assert_array_equal(t, np.where(right, 1.0, -1.0))
    np.testing.assert_array_equal(y, np.where(right, x, 0.0))
    np.testing.assert_array_equal(dx, np.where(right, 1.0, 0.0))


def test_the_compiled_exp_is_within_4e_7_of_exp_from_minus_87_to_0_and_zero_below():
    loops = _compiled_loops()
    x = np.concatenate([np.linspace(-87, 0, 2_000_001, dtype=np.float32),
                        np.array([-0.0, -1e-30, -0.34657359, -0.34657362, -86.999], dtype=np.float32)])
    out = np.empty_like(x)
    loops.exp_nonpositive_f32_array(x, out)
    exact = np.exp(x.astype(np.float64))
    # 4e-7: the Taylor series to r^7 is within 1e-8 of exp(r), and float32 roundings in
    # Horner's rule, the reduction r = x - k ln 2 (fast-math may fuse Cody & Waite's two
    # steps) and the seven powers of two add a few 6e-8 each (measured: 3e-7). Dropping the
    # r^7 term is off by 1.4e-6; a wrong power of two, by a factor of 2.
    assert np.abs(out / exact - 1).max() <= 4e-7
    below = np.array([-87.5, -100.0, -1e30, -np.inf], dtype=np.float32)
    loops.exp_nonpositive_f32_array(below, below_out := np.empty_like(below))
    assert (below_out == 0).all()                  # exp underflows there (NumPy: subnormals or 0)
    nan = np.array([np.nan], dtype=np.float32)
    loops.exp_nonpositive_f32_array(nan, nan_out := np.empty_like(nan))
    assert np.isnan(nan_out[0])


def test_the_tanh_coefficients_are_lamberts_continued_fraction():
    from autograd.kernels.cpu.loops import tanh_coefficients
    # depth 1: tanh u ~ u / (1 + u^2 / 3) = u * 3 / (3 + u^2)
    assert tanh_coefficients(1) == ([3], [3, 1])
    # depth 2: u / (1 + u^2 / (3 + u^2 / 5)) = u (15 + u^2) / (15 + 6 u^2)
    assert tanh_coefficients(2) == ([15, 1], [15, 6])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("split", [False, True])   # True: the elements split over the threads
def test_adamw_fast_update_follows_the_reference_for_five_steps(dtype, wd, split, monkeypatch):
    from autograd.kernels import adamw
    _compiled_loops()
    if split:
        monkeypatch.setattr(adamw, "SPLIT_ELEMENTS", 100)   # 1073 elements: as many threads as cores
    rng = np.random.default_rng(3)
    shape = (37, 29)                       # not a multiple of any SIMD width
    ref = [rng.standard_normal(shape).astype(dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)]
    fast = [a.copy() for a in ref]
    for t in range(1, 6):
        g = rng.standard_normal(shape).astype(dtype)
        adamw.update(ref[0], g, ref[1], ref[2], 1e-2, 0.9, 0.99, 1e-8, wd, t)
        adamw.update_fast(fast[0], g, fast[1], fast[2], 1e-2, 0.9, 0.99, 1e-8, wd, t)
    for got, want in zip(fast, ref):
        # the same formula in another order of operations (float32: a few roundings of 6e-8;
        # float64: of 1e-16); a wrong term (a bias correction, the decay) moves p by ~1e-3
        tol = 1e-5 if dtype == "float32" else 1e-12
        assert got.dtype == want.dtype
        assert np.abs(got - want).max() <= tol * np.abs(want).max()


def test_the_optimizer_runs_the_compiled_update_while_fast_bodies_are_on(monkeypatch):
    from autograd import optim
    from autograd.kernels import adamw
    calls = []
    monkeypatch.setattr(adamw, "update_fast", lambda *a: calls.append("fast"))
    p = Tensor(np.ones(3), requires_grad=True)
    p.grad = np.ones(3)
    optim.AdamW([p]).step()
    backend.use_fast_kernels(False)
    try:
        optim.AdamW([p]).step()          # the reference: p moves
    finally:
        backend.use_fast_kernels(True)
    assert calls == ["fast"] and not np.allclose(p.data, 1.0)
