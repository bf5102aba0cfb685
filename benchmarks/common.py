"""Shared pieces of the benchmarks: configurations, weight copying, peak measurement."""
from __future__ import annotations

import time

import numpy as np

from autograd import backend
from tinygpt import GPT2, GPTConfig
from tinygpt.hf import to_hf_state_dict


# name: (model config, batch size, timed steps)
TRAIN_CONFIGS = {
    "baby-char": (GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 12, 30),
    "small": (GPTConfig(vocab_size=50257, block_size=128, n_layer=4, n_head=4, n_embd=256), 8, 10),
    "mini": (GPTConfig(vocab_size=50257, block_size=512, n_layer=8, n_head=4, n_embd=768), 16, 3),
    "gpt2": (GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768), 8, 10),
}


def flops_per_step(cfg: GPTConfig, batch: int) -> float:
    """Floating-point operations of one training step (forward + backward = 3 forwards).

    Per token, the forward does 2 flops per weight of every matrix product (12 C^2 per
    layer, and V*C for the head) and, in attention, 2*T*C for q k^T plus 2*T*C for
    P v per layer (the full T x T square, as the kernels compute it).
    """
    c, t, layers = cfg.n_embd, cfg.block_size, cfg.n_layer
    matmul_weights = layers * 12 * c * c + cfg.vocab_size * c
    forward_per_token = 2 * matmul_weights + layers * 4 * t * c
    return 3.0 * forward_per_token * batch * t


def measure_matmul_peak(seconds=3.0) -> float:
    """float32 GFLOP/s of a large numpy matmul, GPT-sized (8192 x 768 x 3072), on this machine now."""
    xp = backend.xp()
    rng = np.random.default_rng(0)
    a = backend.asarray(rng.standard_normal((8192, 768)).astype(np.float32))
    b = backend.asarray(rng.standard_normal((768, 3072)).astype(np.float32))
    out = xp.empty((8192, 3072), dtype=np.float32)
    xp.matmul(a, b, out=out)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.synchronize()
        t0 = time.perf_counter()
        xp.matmul(a, b, out=out)
        backend.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * 8192 * 768 * 3072 / best / 1e9


def call_times(fn, seconds: float, at_least: int) -> list:
    """Seconds of each call of ``fn()``, made back to back for ``seconds`` and at least
    ``at_least`` times (after one untimed call)."""
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < at_least:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def tiny_gpt(cfg: GPTConfig, seed=0):
    backend.seed(seed)
    return GPT2(cfg)


def hf_model(cfg: GPTConfig, ours: GPT2, attn: str):
    """transformers' GPT2LMHeadModel with tinygpt's weights, dropout off, float32."""
    import torch
    import transformers
    hf_cfg = transformers.GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                     n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                                     attn_implementation=attn)
    model = transformers.GPT2LMHeadModel(hf_cfg)
    state = {k: torch.from_numpy(np.array(v)) for k, v in to_hf_state_dict(ours.state_dict()).items()}
    # checked here rather than by strict=True: lm_head.weight, tied to wte (transformers ties
    # them on construction), may be left out of the dict; any other name left out, or left
    # over, is an error
    result = model.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - {"lm_head.weight"}
    if missing or result.unexpected_keys:
        raise RuntimeError(f"weights not copied into the Hugging Face model: missing {sorted(missing)}, "
                           f"unexpected {sorted(result.unexpected_keys)}")
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise RuntimeError("the Hugging Face model's head is not tied to its token embedding")
    return model.float()


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def step_peak_bytes(step) -> int:
    """How much resident memory one call of ``step`` adds at its peak (Linux).

    After a warm-up call (buffers that live across steps, such as optimizer moments
    and BLAS work space, exist from then on), freed memory is handed back to the
    system (malloc_trim), the kernel's high-water mark is reset (clear_refs 5), and
    one more call is measured: its high-water mark minus the resident memory before.
    The same for every framework, whatever allocator it uses.
    """
    import ctypes
    import gc
    step()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status("VmRSS")
    step()
    return _status("VmHWM") - base
