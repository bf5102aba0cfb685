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
    _shadowed = (f"another package named autograd ({getattr(_autograd, '__file__', '?')}) shadows tinygpt's engine; "
                 f"use a fresh virtual environment: python3 -m venv .venv && . .venv/bin/activate && "
                 f"{_reinstall_hint()}")
    import os as _os
    import sys as _sys
    if _os.path.basename((getattr(_sys, "argv", None) or [""])[0]).split(".")[0] in ("tinygpt", "tinygpt-script"):
        # the tinygpt command (its script imports tinygpt.cli, and so this, first): one line, no traceback
        print(f"tinygpt: error: {_shadowed}", file=_sys.stderr)
        raise SystemExit(1)
    raise ImportError(_shadowed)

from .config import PRESETS, GPTConfig, TrainConfig, preset  # noqa: E402
from .errors import TinyGPTError  # noqa: E402
from .model import GPT2  # noqa: E402
from . import checkpoint as _checkpoint, generate as _generate, hf as _hf  # noqa: E402

# The API of the README, attached here rather than written in model.py: these live in
# the modules above model.py (checkpoint, hf, generate import it), so imports go one way.


def _load(cls, path, device=None):
    """Read a checkpoint written by ``tinygpt train`` (a run folder, or one of its
    ``best``/``latest`` checkpoint folders)."""
    return _checkpoint.load_model(path, device=device)


def _from_pretrained(cls, name_or_path, device=None):
    """OpenAI's GPT-2 weights from a Hugging Face folder, cache, or name (see tinygpt/hf.py)."""
    return _hf.from_pretrained(name_or_path, device=device)


def _save(self, path):
    """Write the weights, config and tokenizer to a checkpoint folder."""
    _checkpoint.save_model(self, path)


def _generate_text(self, prompt="", max_length=100, temperature=0.8, top_k=None, top_p=None, seed=None,
                   max_new_tokens=None, stop_at_eot=True):
    """The prompt followed by up to ``max_length`` new tokens, as text (for a character
    model, the prompt without the characters outside its alphabet: the text the new tokens
    follow; one warning names them).

    ``prompt`` is text (or a list of token ids). ``max_new_tokens``, when given, is used
    instead of ``max_length`` (its synonym); either must be at least 1. Sampling:
    ``temperature`` (0 = greedy), ``top_k`` (None or 0: every token, as on the command
    line), ``top_p``. A setting out of range raises ``TinyGPTError`` naming it.
    """
    name, count = ("max_length", max_length) if max_new_tokens is None else ("max_new_tokens", max_new_tokens)
    try:
        _generate.check_sampling(max_new_tokens=count)
    except _generate.SamplingError as exc:   # named as the caller named it
        raise _generate.SamplingError(name, exc.rule) from None
    count = int(count)                       # 3.0 passes the rule, and range() wants an int
    top_k = None if top_k is None else _generate.top_k_from_user(top_k)
    return _generate.generate_text(self, prompt, max_new_tokens=count,
                                   temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                   stop_at_eot=stop_at_eot)


GPT2.load = classmethod(_load)
GPT2.from_pretrained = classmethod(_from_pretrained)
GPT2.save = _save
GPT2.generate = _generate_text


def load(path, device=None):
    """Same as ``GPT2.load(path)``."""
    return GPT2.load(path, device=device)


__all__ = ["GPT2", "GPTConfig", "TrainConfig", "PRESETS", "preset", "load", "TinyGPTError"]
