"""The engine's one device seam, and the CUDA kernels on a real GPU.

Without a GPU: every kernel that has CUDA bodies runs them (and only them) when the kernels
run on CUDA, decided in one place (function.body_suffix); the kernel files themselves never
ask which device they are on. The CUDA kernels' own arithmetic is checked, with or without a
GPU, in test_cuda_kernels.py (numba's simulator when there is no GPU).
With a GPU (marker ``gpu``): each CUDA kernel matches its NumPy kernel in float32 and
passes gradcheck in float64; the whole model's logits and gradients match; 50 training
steps follow the CPU loss curve.
"""
import ast
from pathlib import Path

import numpy as np
import pytest

import autograd
from autograd import Tensor, backend, gradcheck, optim
from autograd import functional as F
from autograd.function import Function
from autograd.kernels import cuda

ROOT = Path(__file__).resolve().parents[2]


class Dispatched(Exception):
    pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend the kernels run on CUDA; every CUDA launcher raises Dispatched(name)."""
    def fake(name):
        def launcher(*args, **kwargs):
            raise Dispatched(name)
        return launcher
    for name in cuda.LAUNCHERS:
        monkeypatch.setattr(cuda, name, fake(name))
    monkeypatch.setattr(backend, "kernel_device", lambda: "cuda")


def _rand(*shape):
    return Tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("call,expected", [
    (lambda: F.layer_norm(_rand(3, 4), _rand(4), _rand(4)), "layernorm_forward"),
    (lambda: F.gelu(_rand(3, 4)), "gelu_forward"),
    (lambda: F.causal_attention(_rand(1, 1, 3, 2), _rand(1, 1, 3, 2), _rand(1, 1, 3, 2)), "causal_softmax_forward"),
    (lambda: F.linear_cross_entropy(_rand(3, 4), _rand(5, 4), np.array([0, 1, 2])), "softmax_xent_rows"),
], ids=["layernorm", "gelu", "attention", "linear_cross_entropy"])
def test_kernels_hand_their_work_to_cuda_when_cupy_is_active(fake_cuda, call, expected):
    with pytest.raises(Dispatched, match=expected):
        call()


def test_cross_entropys_cuda_body_makes_a_target_outside_the_vocabulary_a_nan_loss(fake_cuda):
    """Its CUDA body (CuPy operations; NumPy here) does not read the targets back to check
    them: a target of -3 had wrapped around to column V-3 with a finite loss."""
    z = np.random.default_rng(1).standard_normal((3, 5))
    good = F.cross_entropy(Tensor(z), np.array([0, 4, -1]))
    backend.kernel_device = lambda: "cpu"
    reference = F.cross_entropy(Tensor(z), np.array([0, 4, -1]))
    backend.kernel_device = lambda: "cuda"
    assert np.isclose(float(good.data), float(reference.data), rtol=1e-12)   # the same arithmetic
    for bad in (5, -3):
        assert np.isnan(float(F.cross_entropy(Tensor(z), np.array([0, bad, -1])).data)), bad


def test_embedding_backward_and_adamw_dispatch_to_cuda(fake_cuda, monkeypatch):
    w = _rand(5, 3)
    out = F.embedding(np.array([1, 1, 4]), w)
    with pytest.raises(Dispatched, match="embedding_backward"):
        out.backward(np.ones((3, 3), dtype=np.float32))
    p = _rand(4)
    p.grad = np.ones(4, dtype=np.float32)
    with pytest.raises(Dispatched, match="adamw_step"):
        optim.AdamW([p]).step()


def test_on_cuda_adamw_and_clipping_take_one_call_per_group(fake_cuda, monkeypatch):
    """Where the kernels run on CUDA the optimizer updates a group in one launch (a launch
    costs the host ~110 µs there) and clipping makes the gradients views of one buffer; on
    the CPU each parameter keeps its own call."""
    sizes = []
    monkeypatch.setattr(cuda, "adamw_step", lambda p, *rest: sizes.append(p.size))
    params = [_rand(4, 3), _rand(5)]
    for p in params:
        p.grad = np.ones(p.shape)
    optim.clip_grad_norm(params, 1.0)
    assert params[1].grad.base is params[0].grad.base is not None
    opt = optim.AdamW(params)
    opt.step()
    assert sizes == [17] and opt._flat


def test_on_the_cpu_adamw_and_clipping_keep_one_call_per_parameter():
    params = [_rand(4, 3), _rand(5)]
    for p in params:
        p.grad = np.ones(p.shape)
    grads = [p.grad for p in params]
    optim.clip_grad_norm(params, 1.0)
    assert all(p.grad is g for p, g in zip(params, grads))     # scaled in place
    opt = optim.AdamW(params)
    opt.step()
    assert not opt._flat


def test_no_kernel_asks_which_device_it_is_on():
    """The reference bodies read as NumPy: no backend.is_cuda()/kernel_device() in the kernels
    or the optimizer; the choice is function.body_suffix's alone."""
    files = [p for p in (ROOT / "autograd" / "kernels").glob("*.py")] + [ROOT / "autograd" / "optim.py"]
    asking = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("is_cuda", "kernel_device", "name") \
                    and isinstance(node.value, ast.Name) and node.value.id == "backend":
                asking.append(f"{path.name}:{node.lineno} backend.{node.attr}")
    assert not asking, asking


def test_cuda_bodies_come_in_pairs():
    with pytest.raises(TypeError, match="forward_cuda/backward_cuda"):
        class OnlyForward(Function):                 # noqa: F841  (defining it is the test)
            @staticmethod
            def forward_cuda(ctx, x):
                return x


def test_a_subclass_that_rewrites_the_reference_does_not_inherit_the_cuda_bodies(fake_cuda):
    """A lesson's kernel that overrides backward (demo 02's forgetful layer norm) runs its own
    math on every device: the parent's CUDA bodies implement the parent's math, not its."""
    from autograd.kernels.layernorm import LayerNorm

    class Forgetful(LayerNorm):
        @staticmethod
        def backward(ctx, g):
            dx, dw, db, _ = LayerNorm.backward(ctx, g)
            return dx * 0.0, dw, db, None

    x, w = _rand(3, 4), _rand(4)
    Forgetful.apply(x, w, w, 1e-5).sum().backward()          # no launcher: fake_cuda would raise
    assert np.all(x.grad == 0)
    with pytest.raises(Dispatched):
        LayerNorm.apply(x, w, w, 1e-5)                        # the parent still takes its CUDA body


def test_the_cpu_runs_the_numpy_bodies(monkeypatch):
    """On the CPU backend no CUDA launcher is ever called."""
    for name in cuda.LAUNCHERS:
        monkeypatch.setattr(cuda, name, lambda *a, **k: pytest.fail("a CUDA launcher ran on the CPU backend"))
    x, w = _rand(3, 4), _rand(4)
    loss = F.linear_cross_entropy(F.gelu(F.layer_norm(x, w, w)), _rand(5, 4), np.array([0, 1, 2]))
    loss.backward()
    optim.AdamW([w]).step()


# ----------------------------------------------------------------------------- on a GPU
@pytest.fixture
def on_both():
    """Run a function on NumPy and on CuPy with the same inputs; return both results on the host."""
    def run(fn, *arrays, dtype="float32"):
        results = []
        for name in ("numpy", "cupy"):
            autograd.use_backend(name)
            inputs = [Tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
            out = fn(*inputs)
            out.backward(backend.asarray(np.random.default_rng(9).standard_normal(out.shape), dtype=out.dtype)
                         if out.size > 1 else None)
            results.append((out.numpy(), [backend.to_numpy(t.grad) for t in inputs]))
        autograd.use_backend("numpy")
        return results
    yield run
    autograd.use_backend("numpy")


def _close(a, b):
    # float32 on both devices, different summation orders: 1e-5 relative to the largest value
    scale = max(np.abs(b).max(), 1e-30)
    assert np.abs(a - b).max() <= 1e-5 * scale


GPU_CASES = {
    "layernorm": (lambda x, w, b: F.layer_norm(x, w, b), [(8, 96), (96,), (96,)]),
    "gelu": (lambda x: F.gelu(x), [(8, 300)]),
    "attention": (lambda q, k, v: F.causal_attention(q, k, v), [(2, 3, 37, 16)] * 3),
    "linear_cross_entropy": (lambda x, w: F.linear_cross_entropy(x, w, np.arange(10) % 7), [(10, 16), (7000, 16)]),
    "embedding": (lambda w: F.embedding(np.array([[1, 1, 5], [5, 0, 1]]), w), [(9, 33)]),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_cuda_kernel_matches_numpy_in_float32(name, on_both):
    fn, shapes = GPU_CASES[name]
    arrays = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    (out_cpu, grads_cpu), (out_gpu, grads_gpu) = on_both(fn, *arrays)
    _close(out_gpu, out_cpu)
    for a, b in zip(grads_gpu, grads_cpu):
        _close(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_cuda_kernel_passes_gradcheck_in_float64(name):
    fn, shapes = GPU_CASES[name]
    autograd.use_backend("cupy")
    try:
        inputs = [Tensor(np.random.default_rng(i).standard_normal(s), dtype="float64", requires_grad=True)
                  for i, s in enumerate(shapes)]
        assert gradcheck(fn, inputs, max_elements=60).ok
    finally:
        autograd.use_backend("numpy")


@pytest.mark.gpu
def test_cuda_adamw_matches_numpy():
    results = []
    for name in ("numpy", "cupy"):
        autograd.use_backend(name)
        p = Tensor(np.random.default_rng(0).standard_normal(1000), dtype="float32", requires_grad=True)
        opt = optim.AdamW([p], lr=1e-2, weight_decay=0.1)
        for step in range(5):
            p.grad = backend.asarray(np.random.default_rng(step).standard_normal(1000), dtype="float32")
            opt.step()
        results.append(p.numpy())
    autograd.use_backend("numpy")
    _close(results[1], results[0])


@pytest.mark.gpu
def test_cuda_adamw_and_clipping_in_one_call_per_group_equal_the_per_parameter_loop():
    """On the GPU: foreach (the default there) against one launch per parameter, for a tiny
    GPT-2's two decay groups. AdamW: three steps (clipped per parameter on both sides), the
    weights and moments equal to the bit, the same arithmetic per element. Clipping: the
    norm and the clipped gradients of one step, equal up to the order of the float32 sums.
    (Not both together over several steps: a gradient that is rounding noise, as some are,
    takes a full-size Adam step whose sign follows the noise.)"""
    from tinygpt import GPT2, GPTConfig
    cfg = GPTConfig(vocab_size=101, block_size=16, n_layer=2, n_head=4, n_embd=64)
    x, y = np.random.default_rng(0).integers(0, 101, (2, 2, 16))

    def steps(foreach, n):
        backend.seed(0)
        model = GPT2(cfg)
        opt = optim.AdamW(optim.decay_groups(model.named_parameters(), 0.1), lr=1e-2, foreach=foreach)
        for _ in range(n):
            _, loss = model(backend.asarray(x), backend.asarray(y))
            loss.backward()
            optim.clip_grad_norm(model.parameters(), 0.5, foreach=False)
            opt.step()
            opt.zero_grad()
        assert bool(opt._flat) == foreach
        return {n: backend.to_numpy(p.data) for n, p in model.named_parameters()}, \
            [backend.to_numpy(v) for entry in opt.state.values() for k, v in entry.items() if k != "step"]

    def clipped(foreach):
        backend.seed(0)
        model = GPT2(cfg)
        _, loss = model(backend.asarray(x), backend.asarray(y))
        loss.backward()
        norm = float(optim.clip_grad_norm(model.parameters(), 0.5, foreach=foreach))
        return norm, {n: backend.to_numpy(p.grad) for n, p in model.named_parameters()}

    autograd.use_backend("cupy")
    try:
        (w_each, m_each), (w_flat, m_flat) = steps(False, 3), steps(True, 3)
        (n_each, g_each), (n_flat, g_flat) = clipped(False), clipped(True)
    finally:
        autograd.use_backend("numpy")
    for name in w_each:
        np.testing.assert_array_equal(w_flat[name], w_each[name])
    for a, b in zip(m_flat, m_each):
        np.testing.assert_array_equal(a, b)
    # float32 sums of squares of ~120k numbers in two orders: a few hundred roundings of 6e-8 at worst
    np.testing.assert_allclose(n_flat, n_each, rtol=1e-5)
    for name in g_each:
        np.testing.assert_allclose(g_flat[name], g_each[name], rtol=1e-5, atol=1e-12)


@pytest.mark.gpu
def test_the_whole_model_on_cuda_matches_numpy_and_follows_the_cpu_loss_curve():
    from tinygpt import GPT2, GPTConfig
    cfg = GPTConfig(vocab_size=101, block_size=32, n_layer=2, n_head=4, n_embd=64)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 101, (4, 32)), rng.integers(0, 101, (4, 32))
    curves, logits = {}, {}
    for name in ("numpy", "cupy"):
        autograd.use_backend(name)
        backend.seed(0)
        model = GPT2(cfg)
        if name == "cupy":  # the same initial weights as on the CPU
            model.load_state_dict(cpu_state)
        else:
            cpu_state = {k: v.copy() for k, v in model.state_dict().items()}
        logits[name] = backend.to_numpy(model(x)[0].data)
        opt = optim.AdamW(optim.decay_groups(model.named_parameters(), 0.1), lr=1e-3)
        losses = []
        for _ in range(50):
            _, loss = model(x, y)
            loss.backward()
            optim.clip_grad_norm(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.data))
        curves[name] = np.array(losses)
    autograd.use_backend("numpy")
    _close(logits["cupy"], logits["numpy"])
    # float32 on both devices; rounding differences grow slowly over 50 steps
    np.testing.assert_allclose(curves["cupy"], curves["numpy"], rtol=1e-3)
    assert curves["numpy"][-1] < curves["numpy"][0] - 0.5
