"""The compiled CPU loops (loops.py, numba) behind the kernels' fast bodies, loaded on first use.

``compiled()`` returns the compiled module, importing numba the first time; without numba
(or where it fails to import) it returns None after one line on stderr saying that the
NumPy bodies are in use and how to get the compiled ones. The fast bodies then run their
NumPy versions: the engine never needs numba.

``TINYGPT_NUMBA=0`` in the environment keeps numba out (the NumPy bodies, no notice).
"""
from __future__ import annotations

import os
import sys

from ...install import install_hint

_state = {"loops": None, "tried": False}


def compiled():
    """autograd.kernels.cpu.loops, or None when numba is not there."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("TINYGPT_NUMBA", "1").strip() != "0":
            try:
                from . import loops                    # imports numba
                _state["loops"] = loops
            except Exception as exc:  # ImportError, or a numba that fails on this platform
                sys.stderr.write(f"note: numba is not available ({type(exc).__name__}: {exc}); the NumPy "
                                 f"kernels are in use (slower on CPU); for the compiled ones: "
                                 f"{install_hint()}\n")
    return _state["loops"]
