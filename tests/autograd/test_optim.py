"""AdamW, SGD, clip_grad_norm and the schedule, against PyTorch where it exists."""
import math

import numpy as np
import pytest

from autograd import Tensor, nn, optim
from tests.helpers import torch_or_skip


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal(s), dtype="float32", requires_grad=True) for s in ((4, 3), (3,), (2, 2, 2))]


def _grads(step, shapes):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_matches_torch_over_20_steps_with_decay_groups(foreach):
    torch = torch_or_skip()
    ours = _params()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    hyper = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    opt = optim.AdamW([{"params": [ours[0], ours[2]], "weight_decay": 0.1},
                       {"params": [ours[1]], "weight_decay": 0.0}], **hyper, foreach=foreach)
    topt = torch.optim.AdamW([{"params": [theirs[0], theirs[2]], "weight_decay": 0.1},
                              {"params": [theirs[1]], "weight_decay": 0.0}], **hyper, foreach=False)
    for step in range(20):
        lr = 3e-3 * (1 - step / 40)                  # a changing learning rate, as a schedule does
        opt.set_lr(lr)
        for group in topt.param_groups:
            group["lr"] = lr
        for p, tp, g in zip(ours, theirs, _grads(step, [p.shape for p in ours])):
            p.grad = g.copy()
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        # float32 on both sides, 20 steps: differences only from the order of float32 roundings
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach_a,foreach_b", [(False, False), (True, True), (True, False), (False, True)])
def test_adamw_state_dict_resumes_exactly(foreach_a, foreach_b):
    a = _params()
    opt_a = optim.AdamW(a, lr=1e-2, weight_decay=0.1, foreach=foreach_a)
    for step in range(3):
        for p, g in zip(a, _grads(step, [p.shape for p in a])):
            p.grad = g
        opt_a.step()
    b = [Tensor(p.data.copy(), requires_grad=True) for p in a]
    opt_b = optim.AdamW(b, lr=0.5, weight_decay=0.0, foreach=foreach_b)
    opt_b.load_state_dict(opt_a.state_dict())
    for step in range(3, 6):
        for pa, pb, g in zip(a, b, _grads(step, [p.shape for p in a])):
            pa.grad, pb.grad = g, g.copy()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_decay_groups_decay_matrices_and_embeddings_but_not_biases_or_layernorm():
    class M(nn.Module):
        def __init__(self):
            self.wte = nn.Embedding(5, 4)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(4, 4)
    m = M()
    decay, no_decay = optim.decay_groups(m.named_parameters(), 0.1)
    assert {id(p) for p in decay["params"]} == {id(m.wte.weight), id(m.fc.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(m.ln.weight), id(m.ln.bias), id(m.fc.bias)}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_sgd_with_momentum_matches_torch():
    torch = torch_or_skip()
    ours = _params()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt = optim.SGD(ours, lr=0.05, momentum=0.9, weight_decay=0.01)
    topt = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, weight_decay=0.01)
    for step in range(10):
        for p, tp, g in zip(ours, theirs, _grads(step, [p.shape for p in ours])):
            p.grad, tp.grad = g.copy(), torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(max_norm, foreach):
    torch = torch_or_skip()
    ours = _params()
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    for p, tp, g in zip(ours, theirs, _grads(0, [p.shape for p in ours])):
        p.grad, tp.grad = g * 3, torch.tensor(g * 3)
    norm = optim.clip_grad_norm(ours, max_norm, foreach=foreach)
    tnorm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    np.testing.assert_allclose(float(norm), tnorm.item(), rtol=1e-6)
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-6)
    total = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in ours))
    if max_norm < float(norm):   # clipped: the new norm is max_norm, within float32 rounding of the scale
        assert abs(total - max_norm) <= 1e-5 * max_norm
    else:                        # not clipped: the gradients are as they were
        assert abs(total - float(norm)) <= 1e-5 * float(norm)


def _steps(opt, params, steps, first=0):
    for step in range(first, first + steps):
        for p, g in zip(params, _grads(step, [p.shape for p in params])):
            p.grad = g
        opt.step()


def _two_groups(params):
    return [{"params": [params[0], params[2]], "weight_decay": 0.1}, {"params": [params[1]], "weight_decay": 0.0}]


def test_adamw_foreach_updates_every_element_exactly_as_the_per_parameter_loop():
    """One update over the group's flat buffers is the same arithmetic, element by element,
    as one update per parameter: weights and both moments equal to the bit."""
    each, flat = _params(), _params()
    opt_each = optim.AdamW(_two_groups(each), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    opt_flat = optim.AdamW(_two_groups(flat), lr=1e-2, betas=(0.9, 0.95), foreach=True)
    _steps(opt_each, each, 5)
    _steps(opt_flat, flat, 5)
    assert len(opt_flat._flat) == 2 and not opt_each._flat     # the flat path ran, once per group
    for pe, pf in zip(each, flat):
        np.testing.assert_array_equal(pf.data, pe.data)
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt_flat.state[id(pf)][key], opt_each.state[id(pe)][key])
        assert opt_flat.state[id(pf)]["step"] == 5
    assert np.shares_memory(flat[0].data, opt_flat._flat[0].p)  # the weights live in the buffer


def test_adamw_foreach_follows_a_parameter_given_a_new_array():
    """Module.to and the like give a parameter a new array: the flat buffers are made again
    from it at the next step, so that the parameter is still trained."""
    each, flat = _params(), _params()
    opt_each = optim.AdamW(each, lr=1e-2, foreach=False)
    opt_flat = optim.AdamW(flat, lr=1e-2, foreach=True)
    _steps(opt_each, each, 2)
    _steps(opt_flat, flat, 2)
    for params in (each, flat):
        params[1].data = params[1].data.copy() + np.float32(1.0)  # a new array, another value
        params[0].data[...] = np.float32(0.5)                     # written in place
    _steps(opt_each, each, 2, first=2)
    _steps(opt_flat, flat, 2, first=2)
    for pe, pf in zip(each, flat):
        np.testing.assert_array_equal(pf.data, pe.data)


def test_adamw_foreach_leaves_a_group_with_a_missing_gradient_to_the_per_parameter_loop():
    each, flat = _params(), _params()
    before = flat[1].data.copy()
    for opt, params in ((optim.AdamW(each, foreach=False), each), (optim.AdamW(flat, foreach=True), flat)):
        for p, g in zip(params, _grads(0, [p.shape for p in params])):
            p.grad = g
        params[1].grad = None                                     # not used this step
        opt.step()
        assert id(params[1]) not in opt.state
    np.testing.assert_array_equal(flat[1].data, before)
    for pe, pf in zip(each, flat):
        np.testing.assert_array_equal(pf.data, pe.data)


def test_adamw_foreach_after_a_step_without_one_gradient_matches_the_per_parameter_loop():
    """A parameter that skipped a step is one step behind the others: its bias corrections
    differ, so its group must not be updated as one (the flat path takes one step count)."""
    each, flat = _params(), _params()
    opts = ((optim.AdamW(each, lr=1e-2, foreach=False), each), (optim.AdamW(flat, lr=1e-2, foreach=True), flat))
    for step in range(3):
        for opt, params in opts:
            for p, g in zip(params, _grads(step, [p.shape for p in params])):
                p.grad = g.copy()
            if step == 0:
                params[1].grad = None                             # not used in the first step
            opt.step()
    assert opts[1][0].state[id(flat[1])]["step"] == 2 and opts[1][0].state[id(flat[0])]["step"] == 3
    for pe, pf in zip(each, flat):
        np.testing.assert_array_equal(pf.data, pe.data)


def test_clip_grad_norm_foreach_makes_the_gradients_views_of_one_buffer_and_agrees():
    each, flat = _params(), _params()
    for a, b, g in zip(each, flat, _grads(0, [p.shape for p in each])):
        a.grad, b.grad = g * 3, g * 3
    norm_each = optim.clip_grad_norm(each, 0.5, foreach=False)
    norm_flat = optim.clip_grad_norm(flat, 0.5, foreach=True)
    # float32 sums of squares of 24 numbers, in two orders: a few roundings of 6e-8 apart
    np.testing.assert_allclose(float(norm_flat), float(norm_each), rtol=1e-6)
    assert norm_flat.dtype == np.float64 and type(norm_flat) is type(norm_each) and np.shape(norm_flat) == ()
    for a, b in zip(each, flat):
        np.testing.assert_allclose(b.grad, a.grad, rtol=1e-6)
        assert b.grad.shape == a.shape and b.grad.dtype == np.float32
    assert np.shares_memory(flat[0].grad.base, flat[2].grad)


@pytest.mark.parametrize("foreach", [False, True])
def test_clip_grad_norm_adds_the_squares_in_float64(foreach):
    """Two float32 gradients, 12 and 3 elements of 5e18: each one's sum of squares fits in
    float32 (12 x 2.5e37 = 3.0e38 < 3.4e38), the whole sum does not (3.75e38): the norm is
    1.94e19, not inf, and the gradients are scaled to norm 1, not zeroed."""
    params = _params()[:2]
    for p in params:
        p.grad = np.full(p.shape, 5e18, dtype=np.float32)
    n = sum(p.grad.size for p in params)                      # 15 elements of 5e18
    norm = optim.clip_grad_norm(params, 1.0, foreach=foreach)
    np.testing.assert_allclose(float(norm), 5e18 * math.sqrt(n), rtol=1e-6)
    for p in params:
        np.testing.assert_allclose(p.grad, 1 / math.sqrt(n), rtol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_steps_past_an_empty_group(foreach):
    """decay_groups makes a decay group even when no parameter has two axes: empty."""
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.ones(3, np.float32)
    opt = optim.AdamW(optim.decay_groups([("ln.bias", p)], 0.1), lr=0.1, foreach=foreach)
    assert opt.param_groups[0]["params"] == []
    opt.step()
    np.testing.assert_allclose(p.data, 0.9, rtol=1e-6)          # one Adam step of lr 0.1 from 1


def test_warmup_cosine_schedule():
    sched = optim.WarmupCosine(max_lr=1e-3, min_lr=1e-4, warmup_steps=100, decay_steps=2000)
    assert sched(0) == pytest.approx(1e-5)
    assert sched(99) == pytest.approx(1e-3)
    assert sched(100) == pytest.approx(1e-3)
    assert sched(1050) == pytest.approx(0.5 * (1e-3 + 1e-4))   # half-way down the cosine
    assert sched(2000) == pytest.approx(1e-4)
    assert sched(5000) == pytest.approx(1e-4)
    lrs = [sched(s) for s in range(100, 2001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
