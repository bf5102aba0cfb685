"""The --device choice of the GPU benchmarks: ``cuda`` (a real GPU, through CuPy) or
``cuda-sim`` (numba's CUDA simulator on the CPU, to check a script on tiny shapes).

Kept apart from common.py, which imports the engine: the simulator must be switched on
before numba is first imported, so ``use_device`` runs before anything else is."""
from __future__ import annotations

import os
import sys


def add_device_argument(parser) -> None:
    parser.add_argument("--device", choices=["cuda", "cuda-sim"], default="cuda")


def use_device(device: str, prog: str):
    """Switch the engine to ``device`` and return autograd's backend module; without it,
    end the script with one line naming ``prog``."""
    if device == "cuda-sim":
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from autograd import backend
    try:
        backend.use_backend(device)
    except backend.BackendUnavailable as exc:
        sys.exit(f"{prog}: {exc}")
    return backend
