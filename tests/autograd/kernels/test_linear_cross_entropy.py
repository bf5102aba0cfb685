"""linear_cross_entropy(x, W, targets): the fused head + loss equals linear then
cross_entropy, passes gradcheck, and matches PyTorch."""
import numpy as np
import pytest

from autograd import Tensor, backend, gradcheck, no_grad
from autograd import functional as F
from autograd.kernels import linear_cross_entropy as lce
from tests.helpers import rand, torch_or_skip


def test_linear_cross_entropy_gradcheck_with_ignored_rows():
    targets = np.array([[1, 6, -1], [0, -1, 3]])
    assert gradcheck(lambda x, w: F.linear_cross_entropy(x, w, targets), [rand(2, 3, 5, seed=1), rand(7, 5, seed=2)]).ok


def test_it_equals_linear_followed_by_cross_entropy(monkeypatch):
    x, w = rand(9, 4, seed=1), rand(11, 4, seed=2)
    x2, w2 = rand(9, 4, seed=1), rand(11, 4, seed=2)
    targets = np.random.default_rng(3).integers(0, 11, 9)
    targets[4] = -1
    monkeypatch.setattr(lce, "CHUNK_ELEMENTS", 25)            # 2 rows per chunk
    monkeypatch.setattr(backend, "host_threads", lambda: 2)
    fused = F.linear_cross_entropy(x, w, targets)
    fused.backward()
    plain = F.cross_entropy(F.linear(x2, w2), targets)
    plain.backward()
    np.testing.assert_allclose(fused.data, plain.data, rtol=1e-13)
    np.testing.assert_allclose(x.grad, x2.grad, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(w.grad, w2.grad, rtol=1e-11, atol=1e-14)


def test_rows_split_over_threads_give_the_same_result(monkeypatch):
    x, w = rand(300, 8, seed=1), rand(13, 8, seed=2)
    targets = np.random.default_rng(3).integers(0, 13, 300)
    one = F.linear_cross_entropy(x, w, targets)
    one.backward()
    g1 = x.grad.copy()
    x.zero_grad()
    monkeypatch.setattr(backend, "host_threads", lambda: 3)   # more threads than this machine may have
    three = F.linear_cross_entropy(x, w, targets)
    three.backward()
    assert one.data == three.data and np.array_equal(g1, x.grad)


@pytest.mark.parametrize("rows_per_chunk", [None, 2])   # one chunk; five, the last one row, through one scratch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_without_gradients_it_keeps_no_logits_and_gives_the_same_loss(monkeypatch, rows_per_chunk, dtype):
    x, w = rand(9, 4, seed=1), rand(9, 4, seed=2)
    x.data, w.data = x.data.astype(dtype), w.data.astype(dtype)
    targets = np.random.default_rng(3).integers(0, 9, 9)
    targets[4] = -1
    with_gradients = F.linear_cross_entropy(x, w, targets).data
    if rows_per_chunk:
        monkeypatch.setattr(lce, "CHUNK_ELEMENTS", rows_per_chunk * 9)
    with no_grad():
        evaluated = F.linear_cross_entropy(x, w, targets)
    assert evaluated._ctx is None
    # float32: one product against chunks of two rows may block the GEMM differently, a few
    # roundings of 4-term sums (~1e-7 relative); each row's softmax is its own either way
    np.testing.assert_allclose(evaluated.data, with_gradients, rtol=1e-14 if dtype == np.float64 else 1e-6)


def test_large_logits_stay_finite_in_float32():
    x = Tensor(np.full((2, 3), 100.0), requires_grad=True)
    w = Tensor(np.array([[50.0, 50.0, 50.0], [-50.0, -50.0, -50.0]]), requires_grad=True)  # logits +-1.5e4
    loss = F.linear_cross_entropy(x, w, np.array([1, 0]))
    loss.backward()
    assert np.isfinite(loss.data) and np.all(np.isfinite(x.grad)) and np.all(np.isfinite(w.grad))
    np.testing.assert_allclose(loss.data, 15000.0 + np.log1p(np.exp(-30000.0)) / 2, rtol=1e-6)


def test_bad_targets_are_clear_errors():
    with pytest.raises(IndexError, match="target 9 is outside"):
        F.linear_cross_entropy(rand(2, 3), rand(4, 3), np.array([0, 9]))


def test_linear_cross_entropy_matches_torch():
    torch = torch_or_skip()
    x, w = rand(2, 5, 6, seed=1), rand(17, 6, seed=2)
    targets = np.random.default_rng(3).integers(0, 17, (2, 5))
    targets[0, 2] = -1
    loss = F.linear_cross_entropy(x, w, targets)
    loss.backward()
    tx, tw = torch.tensor(x.data, requires_grad=True), torch.tensor(w.data, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy((tx @ tw.T).reshape(-1, 17), torch.tensor(targets).reshape(-1),
                                              ignore_index=-1)
    tloss.backward()
    np.testing.assert_allclose(loss.data, tloss.item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-13)


def _loss_and_grads(x, w, t, fast, steps):
    """``steps``: a list of actions on two live graphs, to exercise the reused P buffer."""
    backend.use_fast_kernels(fast)
    try:
        X, Wt = [Tensor(x, requires_grad=True)], Tensor(w, requires_grad=True)
        grads = []
        for action in steps:
            if action == "forward":
                X.append(Tensor(x * len(X), requires_grad=True))        # each graph its own input
                X[-1].loss = F.linear_cross_entropy(X[-1], Wt, t)
            else:                                                       # "backward i" / "retain i"
                kind, i = action.split()
                X[int(i)].loss.backward(retain_graph=kind == "retain")
                grads.append(X[int(i)].grad.copy())
        return grads
    finally:
        backend.use_fast_kernels(True)


def test_the_reused_p_buffer_never_serves_two_live_graphs():
    rng = np.random.default_rng(0)
    x, w, t = rng.standard_normal((6, 5)), rng.standard_normal((7, 5)), rng.integers(0, 7, 6)
    # two graphs alive at once; a graph backpropagated twice (retain_graph) with a forward
    # in between; then the plain loop, where the buffer is reused
    steps = ["forward", "forward", "backward 2", "retain 1", "forward", "backward 1",
             "backward 3", "forward", "backward 4", "forward", "backward 5"]
    got = _loss_and_grads(x, w, t, True, steps)
    want = _loss_and_grads(x, w, t, False, steps)      # the reference allocates every time
    assert len(got) == 6
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)   # float64: the same products


def test_the_next_step_reuses_the_freed_p_buffer():
    from autograd.kernels import linear_cross_entropy as lce
    rng = np.random.default_rng(0)
    x, w, t = rng.standard_normal((6, 5)), Tensor(rng.standard_normal((7, 5)), requires_grad=True), np.arange(6)
    loss = F.linear_cross_entropy(Tensor(x, requires_grad=True), w, t)
    first = loss._ctx.saved[2]                                            # P
    loss.backward()
    again = F.linear_cross_entropy(Tensor(x, requires_grad=True), w, t)
    assert again._ctx.saved[2] is first                                   # the same memory
    other = F.linear_cross_entropy(Tensor(x, requires_grad=True), w, t)   # `again` still holds it
    assert other._ctx.saved[2] is not first and lce._SPARE["probs"] is other._ctx.saved[2]


@pytest.mark.parametrize("vocab", [7, 16, 1040, 2100])   # below one lane's width, one block, 2 blocks + tails
def test_the_compiled_softmax_rows_equal_the_reference_in_float32(vocab):
    from autograd.kernels import cpu
    loops = cpu.compiled()
    if loops is None:
        pytest.skip("numba is not installed: the compiled loops are not in use")
    rng = np.random.default_rng(vocab)
    n = 37
    z = (rng.standard_normal((n, vocab)) * 4).astype(np.float32)
    z[3, 5] = 80.0                                            # a row dominated by one logit
    targets = rng.integers(0, vocab, n)
    row_scale = np.full((n, 1), 1 / 35, dtype=np.float32)
    row_scale[[4, 9]] = 0.0                                   # ignored rows
    ours, ref = z.copy(), z.copy()
    loss_ours, loss_ref = np.empty(n), np.empty(n)
    loops.softmax_xent_rows_f32(ours, targets, row_scale, loss_ours, True)
    lce.softmax_xent_rows(ref, targets, row_scale, loss_ref, True)
    # float32 on both sides, the sums in another order and exp within 4e-7: 1e-5 of the
    # largest value, the fast bodies' bar (tests/autograd/test_fast_bodies.py)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(loss_ours - loss_ref).max() <= 1e-5 * np.abs(loss_ref).max()
    only_loss = z.copy()
    loops.softmax_xent_rows_f32(only_loss, targets, row_scale, loss_ours, False)
    assert np.abs(loss_ours - loss_ref).max() <= 1e-5 * np.abs(loss_ref).max()


def test_a_nan_logit_makes_the_compiled_loss_nan():
    from autograd.kernels import cpu
    loops = cpu.compiled()
    if loops is None:
        pytest.skip("numba is not installed: the compiled loops are not in use")
    z = np.zeros((2, 100), dtype=np.float32)
    z[0, 50] = np.nan                                         # a diverged run must show it
    losses = np.empty(2)
    loops.softmax_xent_rows_f32(z, np.array([1, 1]), np.full((2, 1), 0.5, np.float32), losses, True)
    assert np.isnan(losses[0]) and losses[1] == pytest.approx(np.log(100))


def _compiled_loops_or_skip():
    from autograd.kernels import cpu
    loops = cpu.compiled()
    if loops is None:
        pytest.skip("numba is not installed: the compiled loops are not in use")
    return loops


def _logits_growing_by_column(rows, vocab, channels, seed):
    """float32 x, W whose logits grow from column to column, so that most rows find a larger
    maximum in each later chunk (the running sum must be rescaled), and a row whose largest
    logit is in column 0 (it must not be)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, channels)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) + 1.0                                     # > 0: column j's logit grows with j
    w = (rng.standard_normal((vocab, channels)) * 0.5).astype(np.float32)
    w[:, 0] = np.linspace(0.0, 12.0, vocab)
    x[5], w[0] = 0.0, 0.0
    x[5, 1], w[0, 1] = 30.0, 1.0                                        # row 5: column 0 holds its max
    return x, w


@pytest.mark.parametrize("width", [1, 7, 16, 50])                       # 50: the whole vocabulary at once
def test_the_compiled_columns_logsumexp_equals_float64_row_by_row(width):
    loops = _compiled_loops_or_skip()
    rows, vocab = 37, 50
    x, w = _logits_growing_by_column(rows, vocab, 6, seed=width)
    targets = np.random.default_rng(1).integers(0, vocab, rows)
    targets[:4] = [0, 49, width - 1, min(width, 49)]                    # the first, the last, a chunk's edges
    m, s, picked = np.full(rows, -np.inf), np.zeros(rows), np.zeros(rows)
    chunks = [np.ascontiguousarray(x @ w[a:a + width].T) for a in range(0, vocab, width)]   # (rows, <= width)
    for a, z in zip(range(0, vocab, width), chunks):
        loops.logsumexp_columns_f32(z, a, targets, m, s, picked)
    z64 = np.concatenate(chunks, axis=1).astype(np.float64)             # the same float32 logits, in float64
    top = z64.max(axis=1)
    lse = top + np.log(np.exp(z64 - top[:, None]).sum(axis=1))
    np.testing.assert_array_equal(m, top)                               # a max is exact
    np.testing.assert_array_equal(picked, z64[np.arange(rows), targets])
    # float32 exp within 4e-7 (test_fast_bodies.py) and float32 partial sums: the log of the
    # sum within a few 1e-7 relative, and lse_i is at least 1 here
    np.testing.assert_allclose(m + np.log(s), lse, rtol=1e-6)


@pytest.mark.parametrize("width,block_rows", [(1, 300), (7, 300), (7, 130), (16, 130), (50, 300)])
def test_without_gradients_float32_logits_by_chunks_of_columns_equal_the_reference(monkeypatch, width, block_rows):
    _compiled_loops_or_skip()
    x, w = _logits_growing_by_column(300, 50, 6, seed=3)
    targets = np.random.default_rng(2).integers(0, 50, 300)
    targets[[4, 200, 299]] = -1                                         # ignored rows, one in the last block
    ref = F.linear_cross_entropy(Tensor(x), Tensor(w), targets).data    # with gradients: P in one product
    calls = []
    columns = lce._losses_by_columns
    monkeypatch.setattr(lce, "_losses_by_columns", lambda *args: (calls.append(1), columns(*args)))
    monkeypatch.setattr(lce, "COLUMN_BLOCK_ROWS", block_rows)           # 130: blocks of 130, 130 and 40 rows
    monkeypatch.setattr(lce, "COLUMN_CHUNK_ELEMENTS", width * block_rows)
    monkeypatch.setattr(backend, "host_threads", lambda: 2)             # a block of >= 128 rows: 2 threads
    with no_grad():
        evaluated = F.linear_cross_entropy(Tensor(x), Tensor(w), targets).data
    assert calls, "the column path did not run"
    # float32 both ways: the sums and exp in another order, 1e-5 relative (the fast bodies' bar)
    np.testing.assert_allclose(evaluated, ref, rtol=1e-5)
    backend.use_fast_kernels(False)
    try:
        with no_grad():
            reference_body = F.linear_cross_entropy(Tensor(x), Tensor(w), targets).data
    finally:
        backend.use_fast_kernels(True)
    np.testing.assert_allclose(evaluated, reference_body, rtol=1e-5)


@pytest.mark.parametrize("column", [0, 7, 10, 49])   # the first chunk's first column, a later chunk's first, inside
def test_a_nan_logit_makes_the_columns_loss_nan(column):
    loops = _compiled_loops_or_skip()
    z = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    z[1, column] = np.nan                                     # a diverged run must show it, whatever its chunk
    m, s, picked = np.full(3, -np.inf), np.zeros(3), np.zeros(3)
    for a in range(0, 50, 7):
        loops.logsumexp_columns_f32(np.ascontiguousarray(z[:, a:a + 7]), a, np.array([3, 3, 3]), m, s, picked)
    lse = m + np.log(s)
    assert np.isnan(lse[1]) and np.isfinite(lse[[0, 2]]).all()


def test_a_first_chunk_of_minus_infinity_adds_nothing_to_the_columns_sum():
    loops = _compiled_loops_or_skip()
    z = np.full((2, 20), -np.inf, dtype=np.float32)
    z[:, 10:] = np.arange(10, dtype=np.float32)              # finite logits only from column 10 on
    m, s, picked = np.full(2, -np.inf), np.zeros(2), np.zeros(2)
    for a in range(0, 20, 5):
        loops.logsumexp_columns_f32(np.ascontiguousarray(z[:, a:a + 5]), a, np.array([12, 3]), m, s, picked)
    want = 9 + np.log(np.exp(np.arange(10.0) - 9).sum())    # logsumexp of 0..9
    # float32 exp within 4e-7 of exp (test_fast_bodies.py), ten terms: 1e-6 relative
    np.testing.assert_allclose(m + np.log(s), [want, want], rtol=1e-6)
    assert picked[0] == 2.0 and picked[1] == -np.inf
