"""The CUDA kernels (autograd/kernels/cuda/kernels.cu).

Without a GPU: the source compiles with nvcc for float and double, and every kernel
file hands its work to the CUDA launcher when the CuPy backend is active (dispatch).
With a GPU (marker ``gpu``): each CUDA kernel matches its NumPy kernel in float32 and
passes gradcheck in float64; the whole model's logits and gradients match; 50 training
steps follow the CPU loss curve.
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import autograd
from autograd import Tensor, backend, gradcheck, optim
from autograd import functional as F
from autograd.kernels import cuda

SOURCE = Path(cuda.__file__).with_name("kernels.cu")
LAUNCHERS = ["layernorm_forward", "layernorm_backward_dx", "gelu_forward", "gelu_backward", "softmax_xent_rows",
             "causal_softmax_forward", "softmax_backward", "embedding_backward", "adamw_step"]


@pytest.mark.parametrize("real", ["float", "double"])
def test_the_cuda_source_compiles(real, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = subprocess.run([nvcc, "--ptx", "-arch=sm_80", f"-DREAL={real}", str(SOURCE), "-o", str(tmp_path / "k.ptx")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in LAUNCHERS:
        assert f".entry {name}(" in ptx, name


class Dispatched(Exception):
    pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend the CuPy backend is active; every CUDA launcher raises Dispatched(name)."""
    def fake(name):
        def launcher(*args, **kwargs):
            raise Dispatched(name)
        return launcher
    for name in LAUNCHERS:
        monkeypatch.setattr(cuda, name, fake(name))
    monkeypatch.setattr(backend, "is_cuda", lambda: True)


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


def test_embedding_backward_and_adamw_dispatch_to_cuda(fake_cuda, monkeypatch):
    w = _rand(5, 3)
    out = F.embedding(np.array([1, 1, 4]), w)
    with pytest.raises(Dispatched, match="embedding_backward"):
        out.backward(np.ones((3, 3), dtype=np.float32))
    p = _rand(4)
    p.grad = np.ones(4, dtype=np.float32)
    with pytest.raises(Dispatched, match="adamw_step"):
        optim.AdamW([p]).step()


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
        p = Tensor(np.random.default_rng(0).standard_normal(1000), requires_grad=True)
        opt = optim.AdamW([p], lr=1e-2, weight_decay=0.1)
        for step in range(5):
            p.grad = backend.asarray(np.random.default_rng(step).standard_normal(1000), dtype="float32")
            opt.step()
        results.append(p.numpy())
    autograd.use_backend("numpy")
    _close(results[1], results[0])


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
