"""Every core op passes a float64 finite-difference gradient check, including
broadcasting, size-1 axes and non-contiguous (transposed) inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autograd import Tensor, gradcheck
from autograd import functional as F
from tests.helpers import rand, torch_or_skip, transposed


def positive(*shape, seed=0):
    data = np.random.default_rng(seed).uniform(0.5, 2.0, size=shape)
    return Tensor(data, dtype="float64", requires_grad=True)


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
}

BROADCAST_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((1,), (2, 3)),
    ((), (2, 2)),
    ((2, 1, 4), (2, 3, 1)),
]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
def test_binary_op_gradcheck_with_broadcasting(op, shapes):
    a, b = positive(*shapes[0], seed=1), positive(*shapes[1], seed=2)
    report = gradcheck(BINARY[op], [a, b])
    assert report.ok and report.checked == [a.size, b.size]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_add_and_mul_gradcheck_on_random_broadcast_shapes(data):
    ndim = data.draw(st.integers(1, 3))
    full = data.draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    # the second operand: drop leading axes and set some axes to 1
    drop = data.draw(st.integers(0, ndim - 1))
    other = [n if data.draw(st.booleans()) else 1 for n in full[drop:]]
    a, b = positive(*full, seed=3), positive(*other, seed=4)
    assert gradcheck(lambda x, y: x * y + x, [a, b]).ok
    assert gradcheck(lambda x, y: y / x - y, [a, b]).ok


def test_scalar_operands_on_either_side():
    a = positive(3, 2)
    assert gradcheck(lambda x: 2.0 - x * 3.0 + 1.0 / x - x / 4.0 + (-x) + x ** 3, [a]).ok
    assert gradcheck(lambda x: 2.0 ** x, [a]).ok


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 2)),
                                    ((3, 4), (2, 4, 5)), ((4,), (4, 3)), ((3, 4), (4,)),
                                    ((2, 1, 3, 4), (5, 4, 2))], ids=str)
def test_matmul_gradcheck_batched_and_broadcast(shapes):
    a, b = rand(*shapes[0], seed=1), rand(*shapes[1], seed=2)
    assert gradcheck(lambda x, y: x @ y, [a, b]).ok


def test_matmul_gradcheck_on_transposed_inputs():
    a, b = transposed(3, 4, seed=1), transposed(4, 5, seed=2)
    assert not a.data.flags["C_CONTIGUOUS"]
    assert gradcheck(lambda x, y: x @ y, [a, b]).ok


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions_gradcheck(name, axis, keepdims):
    x = rand(2, 3, 4)
    assert gradcheck(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), [x]).ok


def test_max_shares_the_gradient_between_ties():
    x = Tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], dtype="float64", requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


def test_shape_ops_gradcheck():
    x = rand(2, 3, 4)
    assert gradcheck(lambda t: t.reshape(4, 6) * 2.0, [x]).ok
    assert gradcheck(lambda t: t.transpose(0, 2), [x]).ok
    assert gradcheck(lambda t: t.permute(2, 0, 1) @ rand(3, 2, seed=5, requires_grad=False), [x]).ok
    assert gradcheck(lambda t: t.T, [x]).ok
    y = transposed(4, 3)
    assert gradcheck(lambda t: t.reshape(12), [y]).ok


@pytest.mark.parametrize("index", [
    (slice(None), 1),
    (slice(1, None), slice(None, None, 2)),
    (Ellipsis, -1),
    np.array([0, 2, 0, 0]),                        # repeated rows: gradients must add up
    (np.array([1, 1, 0]), np.array([2, 2, 3])),    # repeated elements
    np.array([[True, False, True, True], [False, True, True, False], [True] * 4]),
], ids=["column", "strided", "ellipsis", "repeated-rows", "repeated-elements", "boolean"])
def test_getitem_gradcheck(index):
    x = rand(3, 4)
    assert gradcheck(lambda t: t[index], [x]).ok


def test_getitem_with_repeated_integer_index_adds_up():
    x = Tensor(np.zeros(3), dtype="float64", requires_grad=True)
    x[np.array([1, 1, 1, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 1])


def test_cat_stack_split_gradcheck():
    a, b, c = rand(2, 3, seed=1), rand(2, 1, seed=2), rand(2, 3, seed=3)
    assert gradcheck(lambda x, y: F.cat([x, y, x], axis=1), [a, b]).ok
    assert gradcheck(lambda x, y: F.stack([x, y, x * y], axis=1), [a, c]).ok
    assert gradcheck(lambda x: F.split(x, [1, 2], axis=1)[1] * 2.0 + F.split(x, 1, axis=1)[0], [a]).ok


def test_split_rejects_sizes_that_do_not_add_up():
    with pytest.raises(ValueError, match="do not add up"):
        F.split(rand(2, 3), [1, 1], axis=1)


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh"])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (1, 4, 1)], ids=str)
def test_elementwise_math_gradcheck(name, shape):
    x = positive(*shape)
    assert gradcheck(lambda t: getattr(t, name)(), [x]).ok


def test_elementwise_math_on_a_transposed_input():
    x = Tensor(np.random.default_rng(0).uniform(0.5, 2, (4, 3)).T, dtype="float64", requires_grad=True)
    assert gradcheck(lambda t: t.log() + t.sqrt() * t.exp() + t.tanh(), [x]).ok


def test_where_and_masked_fill_gradcheck_and_send_no_gradient_to_masked_places():
    a, b = rand(3, 4, seed=1), rand(1, 4, seed=2)
    cond = np.random.default_rng(3).random((3, 4)) > 0.5
    assert gradcheck(lambda x, y: F.where(cond, x, y), [a, b]).ok
    assert gradcheck(lambda x: F.masked_fill(x, cond, -5.0) * 2.0, [a]).ok
    a.zero_grad()
    F.masked_fill(a, cond, 0.0).sum().backward()
    np.testing.assert_array_equal(a.grad, (~cond).astype(float))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax_gradcheck(axis):
    x = rand(3, 5, 2)
    assert gradcheck(lambda t: t.softmax(axis), [x]).ok
    assert gradcheck(lambda t: t.log_softmax(axis), [x]).ok


def test_softmax_and_log_softmax_match_torch():
    torch = torch_or_skip()
    x = rand(4, 7, scale=5.0)
    g = np.random.default_rng(9).standard_normal((4, 7))
    for ours, theirs in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        x.zero_grad()
        out = ours(x, axis=-1)
        out.backward(g)
        tx = torch.tensor(x.data, requires_grad=True)
        tout = theirs(tx, dim=-1)
        tout.backward(torch.tensor(g))
        np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_softmax_of_huge_logits_stays_finite():
    x = Tensor([[1e4, -1e4, 0.0]], dtype="float32")
    assert np.all(np.isfinite(F.softmax(x).data)) and np.all(np.isfinite(F.log_softmax(x).data))
