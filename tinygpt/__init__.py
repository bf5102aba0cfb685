"""tinygpt: GPT-2 from scratch on a small hand-derived autograd engine.

    from tinygpt import GPT2, GPTConfig
    model = GPT2.load("runs/shakespeare")            # a checkpoint written by `tinygpt train`
    print(model.generate("Once upon a time", max_length=100))
    fresh = GPT2(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128))

    from tinygpt.train import train                   # training from Python
    train(max_iters=100, tokenizer="char")
"""
import autograd as _autograd



def _reinstall_hint() -> str:
    """install_hint() of tinygpt's engine when its file can still be reached (it may share the
    folder with the other package's files), else both forms."""
    try:
        from autograd.install import install_hint
    except ImportError:
        return 'pip install tinygpt (from a source checkout: pip install -e ".")'
    return install_hint()


if not getattr(_autograd, "TINYGPT_ENGINE", False):
    raise ImportError(
        f"another package named autograd ({getattr(_autograd, '__file__', '?')}) shadows tinygpt's engine; "
        f"use a fresh virtual environment: python3 -m venv .venv && . .venv/bin/activate && {_reinstall_hint()}")

from .config import PRESETS, GPTConfig, TrainConfig, preset  # noqa: E402
from .errors import TinyGPTError  # noqa: E402
from .model import GPT2  # noqa: E402


def load(path, device=None):
    """Same as ``GPT2.load(path)``."""
    return GPT2.load(path, device=device)


__all__ = ["GPT2", "GPTConfig", "TrainConfig", "PRESETS", "preset", "load", "TinyGPTError"]
