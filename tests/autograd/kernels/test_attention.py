"""causal_attention(q, k, v): gradcheck, causality, T=1, odd head sizes, PyTorch parity."""
import numpy as np
import pytest

from autograd import Tensor, gradcheck
from autograd import functional as F
from tests.helpers import rand, torch_or_skip


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 3), (1, 2, 6, 5), (2, 1, 4, 7)], ids=str)
def test_causal_attention_gradcheck(shape):
    q, k, v = rand(*shape, seed=1), rand(*shape, seed=2), rand(*shape, seed=3)
    report = gradcheck(F.causal_attention, [q, k, v])
    assert report.ok


def test_causal_attention_gradcheck_with_fewer_queries_than_keys():
    # the KV-cache case: 2 new queries attend to 5 keys
    q, k, v = rand(1, 2, 2, 3, seed=1), rand(1, 2, 5, 3, seed=2), rand(1, 2, 5, 3, seed=3)
    assert gradcheck(F.causal_attention, [q, k, v]).ok


def test_causal_attention_is_one_node():
    q, k, v = rand(1, 1, 3, 2), rand(1, 1, 3, 2), rand(1, 1, 3, 2)
    out = F.causal_attention(q, k, v)
    assert out._ctx.fn.__name__ == "CausalAttention" and all(t._ctx is None for t in out._ctx.inputs)


def test_a_single_position_attends_only_to_itself():
    q, k, v = rand(2, 3, 1, 5), rand(2, 3, 1, 5), rand(2, 3, 1, 5)
    np.testing.assert_allclose(F.causal_attention(q, k, v).data, v.data, rtol=1e-14)


def test_changing_the_future_leaves_every_earlier_output_unchanged_bit_for_bit():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 9, 6)).astype(np.float32) for _ in range(3))
    base = F.causal_attention(Tensor(q), Tensor(k), Tensor(v)).data
    for t in range(8):
        q2, k2, v2 = q.copy(), k.copy(), v.copy()
        for a in (q2, k2, v2):
            a[:, :, t + 1:] = rng.standard_normal(a[:, :, t + 1:].shape) * 100
        out = F.causal_attention(Tensor(q2), Tensor(k2), Tensor(v2)).data
        assert np.array_equal(out[:, :, :t + 1], base[:, :, :t + 1]), f"position <= {t} saw the future"
        assert not np.array_equal(out[:, :, t + 1:], base[:, :, t + 1:])


def test_a_loss_on_the_past_sends_no_gradient_to_future_inputs():
    q, k, v = rand(1, 2, 6, 3, seed=1), rand(1, 2, 6, 3, seed=2), rand(1, 2, 6, 3, seed=3)
    out = F.causal_attention(q, k, v)
    out[:, :, :3].sum().backward()          # a loss on the first three positions only
    for t in (k, v, q):
        assert np.all(t.grad[:, :, 3:] == 0.0)


def test_kv_cache_queries_match_the_last_rows_of_full_attention():
    q, k, v = rand(2, 3, 7, 4, seed=1), rand(2, 3, 7, 4, seed=2), rand(2, 3, 7, 4, seed=3)
    full = F.causal_attention(q, k, v).data
    last = F.causal_attention(Tensor(q.data[:, :, 4:], dtype="float64"), k, v).data
    np.testing.assert_allclose(last, full[:, :, 4:], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("hs", [3, 5, 12])
def test_causal_attention_matches_torch_for_head_sizes_that_are_not_powers_of_two(hs):
    torch = torch_or_skip()
    q, k, v = rand(2, 3, 6, hs, seed=1), rand(2, 3, 6, hs, seed=2), rand(2, 3, 6, hs, seed=3)
    g = np.random.default_rng(4).standard_normal((2, 3, 6, hs))
    out = F.causal_attention(q, k, v)
    out.backward(g)
    tq, tk, tv = (torch.tensor(t.data, requires_grad=True) for t in (q, k, v))
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    tout.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_mismatched_shapes_are_a_clear_error():
    with pytest.raises(ValueError, match=r"expected q \(B, nh, Tq, hs\)"):
        F.causal_attention(rand(1, 2, 3, 4), rand(1, 2, 3, 5), rand(1, 2, 3, 5))
