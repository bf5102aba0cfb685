"""The CUDA kernels (autograd/kernels/cuda/) computed, and compared with NumPy.

Without a GPU the kernels run in numba's CUDA simulator: NUMBA_ENABLE_CUDASIM=1 is set
before numba is first imported, and every GPU thread of a launch becomes a Python thread
working on NumPy arrays. Where CuPy sees a CUDA device, the simulator is left off and the
same tests launch the same kernels on the GPU, on CuPy arrays. Without numba-cuda the
whole module is skipped, with the reason.

Every launcher is checked in float32 and float64 against a reference computed in float64
with NumPy from the formula in the kernel's docstring (or, for AdamW, against the NumPy
update in optim.py), on shapes chosen to be awkward for the launch: rows not a multiple of
anything, widths smaller than the block and widths spanning several blocks without being
a multiple of the block size or of 32. The simulator costs milliseconds per simulated
thread, so it runs with blocks of 8 threads and grids of 3 blocks.
"""
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from autograd import Tensor, backend, optim
from autograd import functional as F


def _choose_device():
    """'gpu' where CuPy has a CUDA device, else 'simulator' (set up before numba is imported)."""
    try:
        backend.use_backend("cupy")
        device = "gpu"
    except backend.BackendUnavailable:
        device = "simulator"
    finally:
        backend.use_backend("numpy")
    if device == "simulator":
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"   # read once, when numba.cuda is first imported; kept set
    from autograd.kernels.cuda import launch
    try:
        simulated = launch.simulated()             # imports numba
    except ImportError as exc:
        pytest.skip(f"numba-cuda cannot be imported, so the CUDA kernels are not tested: {exc}",
                    allow_module_level=True)
    if simulated != (device == "simulator"):
        pytest.skip(f"numba was imported before this module could choose the {device} for it "
                    "(run this file on its own)", allow_module_level=True)
    return device, launch


DEVICE, launch = _choose_device()
from autograd.kernels import cuda  # noqa: E402  (after numba is set up)

SMALL = launch.LaunchConfig(max_row_threads=8, element_threads=8, max_blocks=3)   # 24 threads per grid
CONFIGS = [SMALL] if DEVICE == "simulator" else [SMALL, launch.ON_GPU]

# Tolerance on max |kernel - reference| as a fraction of max |reference|. The reference is
# exact to float64, so the bound is the kernel's own rounding: every output here goes
# through at most a few dozen roundings (sums of at most 40 terms, then exp, log, tanh or
# sqrt, each within a few units in the last place). float32's unit roundoff is 6e-8, so
# that is below about 3e-6; float64's is 1.1e-16, below about 5e-15. 1e-5 and 1e-12 leave
# room for that, and are orders of magnitude below the error of a wrong sign, a missing
# term or a lost partial sum (of the order of the values themselves).
TOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, params=CONFIGS, ids=lambda c: f"{c.max_row_threads}threads")
def on_device(request, monkeypatch):
    """The launch configuration for the test, and the CuPy backend when on a GPU."""
    monkeypatch.setattr(launch, "config", request.param)
    if DEVICE == "gpu":
        backend.use_backend("cupy")
    yield
    backend.use_backend("numpy")


@contextmanager
def numpy_backend():
    """Run the NumPy reference on the NumPy backend, whatever device the kernels are on."""
    was_cuda = backend.is_cuda()
    backend.use_backend("numpy")
    try:
        yield
    finally:
        if was_cuda:
            backend.use_backend("cupy")


def randn(rng, shape, dtype, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def to_device(host):
    """A copy of the host array on the active backend (kernels write into it in place)."""
    return backend.asarray(np.array(host))


def assert_close(actual, expected, dtype, actual_dtype=None):
    """max |actual - expected| <= TOL[dtype] * max |expected|, naming the worst element;
    ``actual`` has the dtype ``actual_dtype`` (by default the kernel's, ``dtype``)."""
    actual = backend.to_numpy(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == (actual_dtype or dtype), actual.dtype
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = np.abs(actual.astype(np.float64) - expected)
    bound = TOL[dtype] * np.abs(expected).max()
    worst = np.unravel_index(error.argmax(), error.shape)
    assert error.max() <= bound, (f"worst element {worst}: {actual[worst]!r}, expected {expected[worst]!r} "
                                  f"(error {error.max():.3g} > {bound:.3g})")


# ---------------------------------------------------------------------------- layer norm
def layernorm_reference(x, w, b, eps):
    x = x.astype(np.float64)
    mu = x.mean(axis=1, keepdims=True)                                # (N, 1)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (x - mu) * rstd                                            # (N, C)
    y = xhat * w + (0.0 if b is None else b)
    return y, xhat, rstd


LAYERNORM_CASES = [((3, 5), True), ((5, 37), True), ((4, 13), False)]   # width < block; 4.6 blocks; no bias
LAYERNORM_IDS = ["width_smaller_than_the_block", "width_of_several_blocks", "no_bias"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape,has_bias", LAYERNORM_CASES, ids=LAYERNORM_IDS)
def test_layernorm_forward_matches_numpy(dtype, shape, has_bias):
    rng = np.random.default_rng(1)
    x = randn(rng, shape, dtype, scale=2.0, shift=3.0)               # a mean far from 0 and a spread
    w, b = randn(rng, shape[1], dtype), randn(rng, shape[1], dtype)
    b = b if has_bias else None
    y, xhat, rstd = cuda.layernorm_forward(to_device(x), to_device(w), None if b is None else to_device(b), 1e-5)
    ref_y, ref_xhat, ref_rstd = layernorm_reference(x, w, b, 1e-5)
    assert_close(y, ref_y, dtype)
    assert_close(xhat, ref_xhat, dtype)
    assert_close(rstd, ref_rstd, dtype)                               # (N, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(3, 5), (5, 37)], ids=["width_smaller_than_the_block", "width_of_several_blocks"])
def test_layernorm_backward_matches_numpy(dtype, shape):
    rng = np.random.default_rng(2)
    x, w, g = randn(rng, shape, dtype, 2.0, 3.0), randn(rng, shape[1], dtype), randn(rng, shape, dtype)
    _, xhat, rstd = layernorm_reference(x, w, None, 1e-5)
    xhat, rstd = xhat.astype(dtype), rstd.astype(dtype)               # what the forward saved
    dx = cuda.layernorm_backward_dx(to_device(g), to_device(xhat), to_device(rstd), to_device(w))
    dxhat = g.astype(np.float64) * w                                  # the formula in layernorm.py, in float64
    xh = xhat.astype(np.float64)
    ref = rstd * (dxhat - dxhat.mean(axis=1, keepdims=True) - xh * (dxhat * xh).mean(axis=1, keepdims=True))
    assert_close(dx, ref, dtype)


# ---------------------------------------------------------------------------- GELU
# GPT-2's tanh approximation of GELU (Hendrycks & Gimpel 2016), its constants written out here
# rather than read from the kernel under test
GELU_K, GELU_C = np.sqrt(2.0 / np.pi), 0.044715


def gelu_reference(x):
    x = x.astype(np.float64)
    t = np.tanh(GELU_K * (x + GELU_C * x ** 3))
    return 0.5 * x * (1.0 + t), t


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(5, 13), (1, 3)], ids=["more_elements_than_the_grid", "fewer_than_a_block"])
def test_gelu_forward_matches_numpy(dtype, shape):
    x = randn(np.random.default_rng(3), shape, dtype, scale=3.0)
    y, t = cuda.gelu_forward(to_device(x))
    ref_y, ref_t = gelu_reference(x)
    assert_close(y, ref_y, dtype)
    assert_close(t, ref_t, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_gelu_backward_matches_numpy(dtype):
    rng = np.random.default_rng(4)
    x, g = randn(rng, (5, 13), dtype, scale=3.0), randn(rng, (5, 13), dtype)
    t = gelu_reference(x)[1].astype(dtype)                           # what the forward saved
    dx = cuda.gelu_backward(to_device(g), to_device(x), to_device(t))
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    du = GELU_K * (1.0 + 3.0 * GELU_C * x64 ** 2)
    ref = g * 0.5 * ((1.0 + t64) + x64 * (1.0 - t64 ** 2) * du)
    assert_close(dx, ref, dtype)


# ---------------------------------------------------------------------------- softmax cross-entropy
XENT_CASES = [
    # rows, V, targets, row_scale (0: an ignored row), write_grad
    (5, 37, [0, 36, 5, 5, 17], [[0.25], [0.0], [0.25], [0.25], [0.0]], True),
    (3, 5, [4, 0, 2], [1 / 3] * 3, False),
    (2, 1, [0, 0], [0.5, 0.5], True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("rows,vocab,targets,row_scale,write_grad", XENT_CASES,
                         ids=["ignored_rows_and_a_wide_row", "loss_only", "one_logit"])
def test_softmax_xent_rows_matches_numpy(dtype, rows, vocab, targets, row_scale, write_grad):
    z = randn(np.random.default_rng(5), (rows, vocab), dtype, scale=3.0)
    targets, row_scale = np.array(targets, dtype=np.int64), np.array(row_scale, dtype=dtype)
    z_dev, losses = to_device(z), to_device(np.full(rows, np.nan))   # losses: float64
    cuda.softmax_xent_rows(z_dev, to_device(targets), to_device(row_scale), losses, write_grad)

    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64 - z64.max(axis=1, keepdims=True)).sum(axis=1)) + z64.max(axis=1)   # (rows,)
    assert_close(losses, lse - z64[np.arange(rows), targets], dtype, actual_dtype=np.float64)
    if not write_grad:
        np.testing.assert_array_equal(backend.to_numpy(z_dev), z)     # the logits are left alone
        return
    onehot = np.eye(vocab)[targets]                                   # (rows, V)
    ref = row_scale.reshape(-1, 1) * (np.exp(z64 - lse[:, None]) - onehot)
    assert_close(z_dev, ref, dtype)
    ignored = row_scale.reshape(-1) == 0
    assert (backend.to_numpy(z_dev)[ignored] == 0).all()              # exactly no gradient from ignored rows


# ---------------------------------------------------------------------------- attention softmax
ATTENTION_SHAPES = [(1, 2, 3, 3), (2, 1, 1, 1), (1, 2, 2, 11), (1, 1, 1, 20)]   # (B, nh, Tq, Tk)
ATTENTION_IDS = ["Tq_equal_Tk", "T_is_1", "Tq_smaller_than_Tk", "one_query_sees_every_key"]


def causal_softmax_reference(scores, scale):
    tq, tk = scores.shape[-2:]
    future = np.arange(tk)[None, :] > np.arange(tq)[:, None] + (tk - tq)   # (Tq, Tk): key j after query i
    s = np.where(future, -np.inf, scores.astype(np.float64) * scale)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True), future


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=ATTENTION_IDS)
def test_causal_softmax_forward_matches_numpy(dtype, shape):
    scores = randn(np.random.default_rng(6), shape, dtype, scale=3.0)
    s = to_device(scores)
    out = cuda.causal_softmax_forward(s, 0.35)
    ref, future = causal_softmax_reference(scores, 0.35)
    assert out is s
    assert_close(s, ref, dtype)
    assert (backend.to_numpy(s)[..., future] == 0).all()             # the future gets exactly 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1, 2, 3, 3), (1, 2, 2, 11)], ids=["Tq_equal_Tk", "Tq_smaller_than_Tk"])
def test_softmax_backward_matches_numpy(dtype, shape):
    rng = np.random.default_rng(7)
    p, future = causal_softmax_reference(randn(rng, shape, dtype, scale=3.0), 0.35)
    p, dp = p.astype(dtype), randn(rng, shape, dtype)
    dp_dev = to_device(dp)
    out = cuda.softmax_backward(to_device(p), dp_dev, 0.35)
    p64 = p.astype(np.float64)
    ref = p64 * (dp - (dp * p64).sum(axis=-1, keepdims=True)) * 0.35
    assert out is dp_dev
    assert_close(dp_dev, ref, dtype)
    assert (backend.to_numpy(dp_dev)[..., future] == 0).all()        # no gradient through masked keys


@pytest.mark.parametrize("threads", [1, 2, 4, 16])
def test_row_kernels_give_the_same_rows_for_every_power_of_two_block(monkeypatch, threads):
    config = launch.LaunchConfig(max_row_threads=threads, element_threads=8, max_blocks=3)
    monkeypatch.setattr(launch, "config", config)
    rng = np.random.default_rng(8)
    x, w = randn(rng, (2, 13), np.float64), randn(rng, 13, np.float64)
    y, _, _ = cuda.layernorm_forward(to_device(x), to_device(w), None, 1e-5)
    assert_close(y, layernorm_reference(x, w, None, 1e-5)[0], np.float64)
    scores = randn(rng, (1, 1, 2, 13), np.float64)
    s = to_device(scores)
    cuda.causal_softmax_forward(s, 0.5)
    p = causal_softmax_reference(scores, 0.5)[0]
    assert_close(s, p, np.float64)
    # the other three row kernels: layer norm's dx, the softmax's backward, the loss rows
    g = randn(rng, (2, 13), np.float64)
    _, xhat, rstd = layernorm_reference(x, w, None, 1e-5)
    dx = cuda.layernorm_backward_dx(to_device(g), to_device(xhat), to_device(rstd), to_device(w))
    dxhat = g * w
    assert_close(dx, rstd * (dxhat - dxhat.mean(axis=1, keepdims=True)
                             - xhat * (dxhat * xhat).mean(axis=1, keepdims=True)), np.float64)
    dp = randn(rng, (1, 1, 2, 13), np.float64)
    dp_dev = cuda.softmax_backward(to_device(p), to_device(dp), 0.5)
    assert_close(dp_dev, p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * 0.5, np.float64)
    z, targets = randn(rng, (2, 13), np.float64, scale=3.0), np.array([0, 12])
    z_dev, losses = to_device(z), to_device(np.full(2, np.nan))
    cuda.softmax_xent_rows(z_dev, to_device(targets), to_device(np.full(2, 0.5)), losses, True)
    lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
    assert_close(losses, lse - z[[0, 1], targets], np.float64)
    assert_close(z_dev, 0.5 * (np.exp(z - lse[:, None]) - np.eye(13)[targets]), np.float64)


@pytest.mark.parametrize("width, expected", [
    (1, 1), (3, 4), (20, 32),            # a row shorter than a warp: the power of two that covers it
    (64, 32), (512, 32),                 # at least a warp, though 16 a thread would need fewer
    (513, 64), (768, 64), (1024, 64), (1025, 128), (3072, 256),   # the power of two >= width / 16
    (16385, 1024), (50257, 1024)])       # at most max_row_threads
def test_row_threads_give_each_gpu_thread_about_sixteen_elements(monkeypatch, width, expected):
    """The GPU preset's block size for a row kernel, worked out by hand from its rule (a power
    of two of about width / row_elements threads, 32 <= threads <= 1024 where the row has 32)."""
    monkeypatch.setattr(launch, "config", launch.ON_GPU)
    assert launch.ON_GPU.row_elements == 16
    assert launch.row_threads(width) == expected


def test_row_threads_with_one_element_a_thread_cover_the_row(monkeypatch):
    """row_elements 1 (the simulator's preset and the tests'): the power of two that covers the
    row, at most max_row_threads, as before row_elements existed."""
    monkeypatch.setattr(launch, "config", launch.LaunchConfig(max_row_threads=16, element_threads=8, max_blocks=3))
    for width, expected in [(1, 1), (3, 4), (13, 16), (16, 16), (17, 16), (1000, 16)]:
        assert launch.row_threads(width) == expected, width
    with pytest.raises(ValueError, match="row_elements"):
        launch.LaunchConfig(max_row_threads=16, element_threads=8, max_blocks=3, row_elements=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_softmax_xent_rows_gives_a_target_outside_the_vocabulary_a_nan_loss_and_leaves_other_rows_alone(dtype):
    """A target of V (or a negative one other than an ignored row's 0) had read z[i, t] of
    the next row, or past the array (the simulator's IndexError), with no sign of it."""
    rows, vocab = 4, 7
    z = randn(np.random.default_rng(6), (rows, vocab), dtype, scale=3.0)
    targets, row_scale = np.array([2, vocab, -3, 6], dtype=np.int64), np.full(rows, 0.25, dtype=dtype)
    z_dev, losses = to_device(z), to_device(np.zeros(rows))
    cuda.softmax_xent_rows(z_dev, to_device(targets), to_device(row_scale), losses, True)
    got, p = backend.to_numpy(losses), backend.to_numpy(z_dev)
    assert np.isnan(got[1:3]).all() and np.isnan(p[1:3]).all()
    z64 = z.astype(np.float64)[[0, 3]]
    lse = np.log(np.exp(z64 - z64.max(axis=1, keepdims=True)).sum(axis=1)) + z64.max(axis=1)
    assert_close(got[[0, 3]], lse - z64[[0, 1], [2, 6]], dtype, actual_dtype=np.float64)
    ref = 0.25 * (np.exp(z64 - lse[:, None]) - np.eye(vocab)[[2, 6]])
    assert_close(p[[0, 3]], ref, dtype)


# ---------------------------------------------------------------------------- flash attention
def attention_reference(q, k, v, g):
    """out, L (log of the softmax denominators), dq, dk, dv of causal attention, in float64,
    from kernels/attention.py's formulas."""
    q, k, v, g = (a.astype(np.float64) for a in (q, k, v, g))
    tq, tk, hs = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / np.sqrt(hs)
    s = q @ np.swapaxes(k, -1, -2) * scale
    s = np.where(np.arange(tk)[None, :] > np.arange(tq)[:, None] + (tk - tq), -np.inf, s)
    m = s.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True)))[..., 0]
    p = np.exp(s - lse[..., None])
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return p @ v, lse, ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, np.swapaxes(p, -1, -2) @ g


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("tq,tk,hs", [(19, 19, 5), (3, 20, 4), (1, 1, 3)],
                         ids=["two-tiles", "kv-cache", "one-token"])
def test_flash_attention_matches_the_attention_formulas(dtype, tq, tk, hs):
    """Tiled with an online softmax, P never stored: out, L and all three gradients equal
    the reference on a query tile that is not full, a key range spanning two tiles
    (TILE = 16), queries that see a cache of earlier keys, and a single token."""
    rng = np.random.default_rng(14)
    q, g = randn(rng, (1, 2, tq, hs), dtype), randn(rng, (1, 2, tq, hs), dtype)
    k, v = randn(rng, (1, 2, tk, hs), dtype), randn(rng, (1, 2, tk, hs), dtype)
    out, lse = cuda.flash_attention_forward(to_device(q), to_device(k), to_device(v), 1.0 / np.sqrt(hs))
    dq, dk, dv = cuda.flash_attention_backward(to_device(q), to_device(k), to_device(v), out, lse, to_device(g),
                                               1.0 / np.sqrt(hs))
    for got, want in zip((out, lse, dq, dk, dv), attention_reference(q, k, v, g)):
        assert_close(got, want, dtype)


def test_flash_attention_backward_with_no_query_gives_zero_key_and_value_gradients():
    """Tq = 0 (allowed by the attention's checks): no launch, and dk, dv had been returned
    uninitialised (empty_like), where the reference's products over an empty axis give 0."""
    rng = np.random.default_rng(15)
    q, g = randn(rng, (1, 2, 0, 4), np.float32), randn(rng, (1, 2, 0, 4), np.float32)
    k, v = randn(rng, (1, 2, 5, 4), np.float32), randn(rng, (1, 2, 5, 4), np.float32)
    out, lse = to_device(np.zeros((1, 2, 0, 4), np.float32)), to_device(np.zeros((1, 2, 0), np.float32))
    for _ in range(3):   # fresh empty arrays may come back zeroed by chance; garbage shows within a few
        trash = [to_device(np.full((1, 2, 5, 4), 7.0, np.float32)) for _ in range(4)]
        del trash
        dq, dk, dv = cuda.flash_attention_backward(to_device(q), to_device(k), to_device(v), out, lse, to_device(g),
                                                   0.5)
        assert backend.to_numpy(dq).shape == (1, 2, 0, 4)
        np.testing.assert_array_equal(backend.to_numpy(dk), 0.0)
        np.testing.assert_array_equal(backend.to_numpy(dv), 0.0)


# ---------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("ids", [[3, 0, 3, 3, 4, 0, 1], [1] * 6], ids=["repeated_ids", "one_id_everywhere"])
def test_embedding_backward_adds_every_repeated_id(dtype, ids):
    rng = np.random.default_rng(9)
    ids = np.array(ids, dtype=np.int64)
    g2, dw = randn(rng, (len(ids), 13), dtype), randn(rng, (5, 13), dtype)   # dw starts non-zero: +=
    dw_dev = to_device(dw)
    cuda.embedding_backward(to_device(ids), to_device(g2), dw_dev)
    ref = dw.astype(np.float64)
    np.add.at(ref, ids, g2.astype(np.float64))                        # exact scatter-add
    assert_close(dw_dev, ref, dtype)
    untouched = np.setdiff1d(np.arange(5), ids)
    np.testing.assert_array_equal(backend.to_numpy(dw_dev)[untouched], dw[untouched])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_embedding_backward_wraps_an_id_outside_the_table_as_the_forward_gather_does(dtype):
    """CuPy's weight[ids] wraps an id of V or -1 around; the backward had added at row ids[n]
    itself: past dW's end (another allocation on a GPU; the simulator's IndexError)."""
    rng = np.random.default_rng(10)
    ids = np.array([5, -1, 7, 2, -6], dtype=np.int64)                  # V = 5: rows 0, 4, 2, 2, 4
    g2, dw = randn(rng, (len(ids), 3), dtype), np.zeros((5, 3), dtype)
    dw_dev = to_device(dw)
    cuda.embedding_backward(to_device(ids), to_device(g2), dw_dev)
    ref = np.zeros((5, 3))
    np.add.at(ref, ids % 5, g2.astype(np.float64))
    assert_close(dw_dev, ref, dtype)
    if DEVICE == "gpu":   # the forward this is the gradient of: CuPy's gather wraps (NumPy's raises)
        table = randn(rng, (5, 3), dtype)
        np.testing.assert_array_equal(backend.to_numpy(to_device(table)[to_device(ids)]), table[ids % 5])


def test_embedding_backward_adds_through_atomics_in_the_simulator(monkeypatch):
    """The simulator runs a block's threads one at a time, so a plain read-modify-write
    loses no update there and the test above cannot tell it from an atomic add; on a GPU
    it would lose them. Counted here: every element of g goes through an atomic add."""
    if DEVICE != "simulator":
        pytest.skip("counts the simulator's atomic adds; on a GPU the test above sees lost updates")
    from numba.cuda.simulator import kernelapi
    calls = []
    original = kernelapi.FakeCUDAAtomic.add
    monkeypatch.setattr(kernelapi.FakeCUDAAtomic, "add", lambda self, *a: calls.append(1) or original(self, *a))
    monkeypatch.setattr(launch, "config", SMALL)
    ids, g2, dw = np.array([1] * 6, dtype=np.int64), np.ones((6, 13)), np.zeros((5, 13))
    cuda.embedding_backward(ids, g2, dw)
    assert len(calls) == 6 * 13
    np.testing.assert_array_equal(dw[1], 6.0)


# ---------------------------------------------------------------------------- AdamW
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("decay", [0.1, 0.0], ids=["decay", "no_decay"])
def test_adamw_step_follows_the_numpy_update_for_three_steps(dtype, decay):
    rng = np.random.default_rng(10)
    p0 = randn(rng, (5, 7), dtype)                                    # 35 elements: more than the grid's 24 threads
    grads = [randn(rng, (5, 7), dtype) for _ in range(3)]
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.95, 1e-8
    with numpy_backend():                                             # the reference: AdamW.step in optim.py
        param = Tensor(p0.copy(), requires_grad=True)
        opt = optim.AdamW([param], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=decay)
        for g in grads:
            param.grad = g
            opt.step()
        state = opt.state[id(param)]
    p, m, v = to_device(p0), to_device(np.zeros_like(p0)), to_device(np.zeros_like(p0))
    for t, g in enumerate(grads, start=1):
        cuda.adamw_step(p, to_device(g), m, v, lr, beta1, beta2, eps, decay, lr / (1.0 - beta1 ** t),
                        np.sqrt(1.0 - beta2 ** t))
    assert_close(p, param.data, dtype)
    assert_close(m, state["exp_avg"], dtype)
    assert_close(v, state["exp_avg_sq"], dtype)


# ---------------------------------------------------------------------------- through the engine
ENGINE_CASES = {
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [(3, 13), (13,), (13,)]),
    "gelu": (lambda x: F.gelu(x) * 1.5, [(3, 13)]),
    "attention": (lambda q, k, v: F.causal_attention(q, k, v) * 2.0, [(1, 2, 3, 4)] * 3),
    "linear_cross_entropy": (lambda x, w: F.linear_cross_entropy(x, w, np.array([1, 4, -1])), [(3, 4), (6, 4)]),
    "embedding": (lambda w: F.embedding(np.array([1, 1, 3]), w) * 1.0, [(5, 4)]),
}


KERNEL_BACKEND = "cuda-sim" if DEVICE == "simulator" else "cupy"


@contextmanager
def kernels_on_device():
    """The CUDA bodies of every kernel: on the GPU (CuPy), or in the simulator on NumPy
    arrays (the cuda-sim backend). Arrays are made inside, on that backend."""
    backend.use_backend(KERNEL_BACKEND)
    try:
        yield
    finally:
        backend.use_backend("numpy")


def _float64(host):
    return backend.asarray(np.array(host, dtype=np.float64))


@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_the_engine_kernels_agree_with_numpy_when_they_run_their_cuda_bodies(name):
    """Function.apply picks forward_cuda/backward_cuda on the CUDA backends; those bodies call
    the launchers with the right arguments: forward and gradients equal the NumPy bodies', in float64."""
    fn, shapes = ENGINE_CASES[name]
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(shape) for shape in shapes]

    def forward_backward():
        inputs = [Tensor(_float64(a), requires_grad=True) for a in arrays]
        out = fn(*inputs)
        out.backward(backend.xp().ones(out.shape))
        return [backend.to_numpy(out.data)] + [backend.to_numpy(t.grad) for t in inputs]

    with numpy_backend():
        expected = forward_backward()
    with kernels_on_device():
        got = forward_backward()
    for g, want in zip(got, expected):
        assert_close(g, want, np.float64)


def test_the_engine_takes_flash_attention_when_switched_on_and_agrees_with_numpy(monkeypatch):
    """backend.use_flash_attention(True): causal_attention's CUDA body runs the flash kernels
    (and not the fused softmax), and forward and gradients still equal the NumPy body's."""
    rng = np.random.default_rng(15)
    arrays = [rng.standard_normal((1, 2, 5, 4)) for _ in range(3)]
    ran = []
    for name in cuda.FLASH_LAUNCHERS + ("causal_softmax_forward",):
        original = getattr(cuda, name)
        monkeypatch.setattr(cuda, name, lambda *a, _n=name, _o=original, **k: ran.append(_n) or _o(*a, **k))

    def forward_backward():
        inputs = [Tensor(_float64(a), requires_grad=True) for a in arrays]
        out = F.causal_attention(*inputs) * 2.0
        out.backward(backend.xp().ones(out.shape))
        return [backend.to_numpy(out.data)] + [backend.to_numpy(t.grad) for t in inputs]

    with numpy_backend():
        expected = forward_backward()
    backend.use_flash_attention(True)
    try:
        with kernels_on_device():
            got = forward_backward()
    finally:
        backend.use_flash_attention(False)
    assert ran == ["flash_attention_forward", "flash_attention_backward"]
    for g, want in zip(got, expected):
        assert_close(g, want, np.float64)


def test_the_cuda_loss_with_gradients_forms_all_logits_in_one_product_and_one_rows_launch(monkeypatch):
    """With gradients P holds every row anyway: one product and one launch of the rows
    kernel, however small the chunks (64 MB; 4 rows here). Without gradients (evaluation)
    the logits still come chunk by chunk. Loss and gradients equal NumPy's in float64."""
    from autograd.kernels import linear_cross_entropy as lce
    monkeypatch.setattr(lce, "CHUNK_ELEMENTS", 4 * 7)           # 4 rows of a vocabulary of 7 per chunk
    launches = []
    original = cuda.softmax_xent_rows
    monkeypatch.setattr(cuda, "softmax_xent_rows", lambda z, *a: launches.append(z.shape[0]) or original(z, *a))
    rng = np.random.default_rng(14)
    x0, w0, targets = rng.standard_normal((10, 5)), rng.standard_normal((7, 5)), rng.integers(0, 7, 10)

    def loss_and_grads(grad):
        x, w = Tensor(_float64(x0), requires_grad=grad), Tensor(_float64(w0), requires_grad=grad)
        loss = F.linear_cross_entropy(x, w, backend.asarray(targets))
        if not grad:
            return [float(loss.data)]
        loss.backward()
        return [float(loss.data), backend.to_numpy(x.grad), backend.to_numpy(w.grad)]

    with numpy_backend():
        expected = loss_and_grads(True)
    with kernels_on_device():
        got = loss_and_grads(True)
        assert launches == [10]
        launches.clear()
        evaluated = loss_and_grads(False)
        assert launches == [4, 4, 2]
    assert abs(got[0] - expected[0]) <= TOL[np.float64] * abs(expected[0])
    assert abs(evaluated[0] - expected[0]) <= TOL[np.float64] * abs(expected[0])
    for g, want in zip(got[1:], expected[1:]):
        assert_close(g, want, np.float64)


def test_adamw_steps_agree_with_numpy_when_the_optimizer_runs_its_cuda_body():
    rng = np.random.default_rng(12)
    p0, grads = rng.standard_normal((3, 9)), [rng.standard_normal((3, 9)) for _ in range(2)]

    def two_steps():
        param = Tensor(_float64(p0), requires_grad=True)
        opt = optim.AdamW([param], lr=1e-2, weight_decay=0.1)
        for g in grads:
            param.grad = _float64(g)
            opt.step()
        return backend.to_numpy(param.data)

    with numpy_backend():
        expected = two_steps()
    with kernels_on_device():
        got = two_steps()
    assert_close(got, expected, np.float64)


def test_a_tiny_gpt2_training_step_runs_every_cuda_kernel_and_equals_numpy_in_float64(monkeypatch):
    """Forward, backward, clipping and AdamW of a 1-layer GPT-2 through the CUDA bodies:
    every one of the nine launchers runs, and the loss and every updated parameter equal
    the NumPy step's (float64: only the order of roundings differs)."""
    from tinygpt import GPT2, GPTConfig
    launched = set()
    for name in cuda.LAUNCHERS:
        original = getattr(cuda, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            launched.add(_name)
            return _original(*args, **kwargs)
        monkeypatch.setattr(cuda, name, counted)
    config = GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=2, n_embd=8)
    tokens = np.random.default_rng(13).integers(0, 11, (1, 5))

    with numpy_backend():                                          # one set of initial weights for both
        backend.seed(0)
        initial = {k: v.copy() for k, v in GPT2(config).to("float64").state_dict().items()}

    def one_step():
        model = GPT2(config).to("float64")
        model.load_state_dict(initial)
        opt = optim.AdamW(optim.decay_groups(model.named_parameters(), 0.1), lr=1e-2)
        x, y = backend.asarray(tokens[:, :4]), backend.asarray(tokens[:, 1:])
        _, loss = model(x, y)
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 0.5)           # 0.5: small enough to clip here
        opt.step()
        return float(loss.data), {n: backend.to_numpy(p.data) for n, p in model.named_parameters()}

    with numpy_backend():
        loss_ref, params_ref = one_step()
    assert not launched, launched                                 # the NumPy step launched nothing
    with kernels_on_device():
        loss, params = one_step()
    assert launched == set(cuda.LAUNCHERS), set(cuda.LAUNCHERS) - launched
    assert abs(loss - loss_ref) <= TOL[np.float64] * abs(loss_ref)
    for name in params_ref:
        assert_close(params[name], params_ref[name], np.float64)


# ---------------------------------------------------------------------------- the launchers' rules
def test_launchers_refuse_dtypes_other_than_float32_and_float64():
    with pytest.raises(TypeError, match="float32 and float64"):
        cuda.gelu_forward(to_device(np.arange(4)))
    with pytest.raises(TypeError, match="one dtype"):
        cuda.layernorm_forward(to_device(np.ones((2, 3), np.float32)), to_device(np.ones(3)), None, 1e-5)


def test_in_place_launchers_refuse_an_array_they_cannot_write_through_a_view():
    scores = to_device(np.ones((1, 1, 3, 3))).swapaxes(-1, -2)         # a transposed view: no (rows, Tk) view
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.causal_softmax_forward(scores, 1.0)


def test_a_launch_configuration_must_use_powers_of_two():
    with pytest.raises(ValueError, match="power of two"):
        launch.LaunchConfig(max_row_threads=24, element_threads=8, max_blocks=3)


def _python_without_the_simulator(code, **variables):
    """``python -c code`` in the repository, numba's CUDA simulator off; it must succeed."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(variables)
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def test_the_engine_imports_and_runs_without_numba():
    """numba is imported on the first CUDA launch only: with numba made unimportable, the
    engine still imports and trains on CPU, and a CUDA launcher says what to install."""
    code = (
        "import sys; sys.modules['numba'] = None\n"                   # import numba now raises ImportError
        "import numpy as np\n"
        "from autograd import Tensor, optim, functional as F\n"
        "from autograd.kernels import cuda\n"
        "x, w = Tensor(np.ones((2, 4)), requires_grad=True), Tensor(np.ones(4), requires_grad=True)\n"
        "F.gelu(F.layer_norm(x, w, None)).sum().backward()\n"
        "optim.AdamW([w]).step()\n"
        "try:\n"
        "    cuda.gelu_forward(np.ones(3))\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
    )
    out = _python_without_the_simulator(code)
    assert "ImportError:" in out.stdout and "pip install" in out.stdout and "numba-cuda" in out.stdout, out.stdout


def test_every_kernel_caches_under_the_hash_of_the_files_it_compiles_in(tmp_path):
    """numba keys a cached kernel on its own file only; the kernels also compile in
    launch.py's constants and reductions.py's device functions, so their cache folder is
    named after those two files' contents (launch.cached_kernel). Checked where the cache
    lives, in a process with the simulator off (which never caches): no GPU is needed to
    make the dispatchers, only to compile them."""
    folder = Path(__file__).resolve().parents[2] / "autograd" / "kernels" / "cuda"
    import hashlib
    digest = hashlib.sha256((folder / "launch.py").read_bytes() + (folder / "reductions.py").read_bytes())
    code = (
        "import importlib, json\n"
        "paths = {}\n"
        "for name in ('adamw', 'attention', 'cross_entropy', 'embedding', 'flash_attention', 'gelu', 'layernorm'):\n"
        "    module = importlib.import_module('autograd.kernels.cuda.' + name)\n"
        "    for attr, value in vars(module).items():\n"
        "        if type(value).__name__ == 'CUDADispatcher' and not value.targetoptions.get('device'):\n"
        "            paths[name + '.' + attr] = value._cache._cache_path\n"
        "print(json.dumps(paths))\n"
    )
    out = _python_without_the_simulator(code, NUMBA_CACHE_DIR=str(tmp_path))
    import json
    paths = json.loads(out.stdout.splitlines()[-1])
    assert len(paths) == 12, sorted(paths)          # every kernel (device functions have no cache of their own)
    expected = tmp_path / f"shared-{digest.hexdigest()[:16]}"
    for kernel, path in paths.items():
        assert Path(path).parent == expected, (kernel, path)
