"""How to install an optional part of tinygpt, worded for how tinygpt was installed.

The engine (``autograd``) and the model (``tinygpt``) ship as one distribution,
``tinygpt``, whose optional extras (``cuda``, ``cuda13``, ``hf``, ``mpi``, ...) add
packages. The command that adds an extra depends on how tinygpt itself got here:

    from a source checkout, installed editable   pip install -e ".[hf]"     (in the checkout)
                                                  pip install -e "/path/to/checkout[hf]"  (elsewhere)
    from a checkout, not installed (PYTHONPATH)  the same, naming the checkout
    from a wheel or an sdist (PyPI)              pip install "tinygpt[hf]"

Which one is told by where this file lives: an editable install (and a checkout on
PYTHONPATH) imports the package from the checkout, whose root holds the project's
``setup.cfg``; a wheel puts it in ``site-packages``, which has none. (PEP 610's
``direct_url.json`` says "editable" too, but a stale ``tinygpt.egg-info`` in the
working folder can hide it from ``importlib.metadata``.) Every message that tells a
user to install something calls ``install_hint``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["install_hint", "how_installed"]

DISTRIBUTION = "tinygpt"


def _package_root() -> Path:
    return Path(__file__).resolve().parent.parent     # the folder that holds autograd/ and tinygpt/


def how_installed() -> tuple[str, Path | None]:
    """("checkout", its root) when imported from a source tree (editable install or
    PYTHONPATH), else ("wheel", None)."""
    root = _package_root()
    if (root / "setup.cfg").is_file() and (root / "tinygpt").is_dir():
        return "checkout", root
    return "wheel", None


def install_hint(extra: str | None = None) -> str:
    """The pip command that adds ``extra`` (or reinstalls tinygpt, for None), as a user of
    this installation should type it: ``pip install -e ".[hf]"`` or ``pip install "tinygpt[hf]"``."""
    suffix = f"[{extra}]" if extra else ""
    kind, root = how_installed()
    if kind == "wheel":
        return f'pip install "{DISTRIBUTION}{suffix}"'
    try:
        here = Path(os.getcwd()).resolve() == root.resolve()
    except OSError:  # the working folder was deleted
        here = False
    target = "." if here else str(root)
    return f'pip install -e "{target}{suffix}"'
