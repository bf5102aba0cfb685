"""The one switch between NumPy (CPU) and CuPy (CUDA).

This is the only module that imports ``cupy``. The engine's modules ask it for the active
array module::

    from autograd import backend
    xp = backend.xp()          # numpy or cupy
    y = xp.exp(x)

Device math (anything computed on the arrays a model trains on) lives in autograd/;
tinygpt's modules only make and move arrays through ``backend`` (the tests check both),
and import ``numpy`` plainly for work on the host: files, memory maps, sampling.

The device is chosen once, at import, from the environment variable
``TINYGPT_DEVICE`` (``cpu``, the default, or ``cuda``), and can be changed later with
``use_backend("numpy" | "cupy")`` (``"cpu"``/``"cuda"`` are accepted as synonyms).
Arrays made under one backend belong to it: switch before building a model, not
in the middle of a computation.

Besides the switch, this module holds the only other global state of the engine:
the random number generator (``seed``/``rng``), so that one seed fixes every random
draw (initialisation, dropout, batches, sampling).

Kernels run in one of two places, ``kernel_device()``: ``"cpu"`` (their NumPy bodies)
or ``"cuda"`` (their CUDA bodies, chosen in ``Function.apply``). A third backend,
``"cuda-sim"``, exists for tests on machines without a GPU: arrays stay NumPy arrays, but
every kernel takes its CUDA body, executed by numba's CUDA simulator (one Python thread per
GPU thread; slow, exact).

``np`` is NumPy itself, for host-side work inside the engine.
"""
from __future__ import annotations

import ctypes
import os
import sys


# ----------------------------------------------------------------------------- BLAS threads
def _shorten_blas_spin() -> bool:
    """Ask OpenBLAS (the BLAS of NumPy's wheels) to put its idle worker threads to sleep after
    2^20 clock cycles (about a third of a millisecond) instead of its default 2^28 (about 0.1 s):
    ``OPENBLAS_THREAD_TIMEOUT=20``, one of the environment variables OpenBLAS reads when it is
    loaded.

    Why: after each matrix product OpenBLAS's workers spin, waiting for the next, and take the
    second core from the elementwise work that follows, which this engine splits over the
    cores (``parallel_rows``). The head's softmax over the default run's 77 million logits took
    61 ms on two threads with them spinning and 36 ms with them asleep; the default run's step
    went from 401-412 to 384-389 ms (3 alternating pairs of processes), while the char recipe's
    step, whose products follow one another within that time, and generation were unchanged.

    It must happen before NumPy loads OpenBLAS, so it takes effect when autograd is imported
    before NumPy, as in the ``tinygpt`` command (a script that imports NumPy first keeps
    OpenBLAS's default). A value already in the environment is kept: setting
    ``OPENBLAS_THREAD_TIMEOUT`` yourself is how to choose another. Other BLAS libraries (MKL,
    Accelerate) ignore it. A process-wide setting, inherited by child processes."""
    if "numpy" in sys.modules or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "20"
    return True


blas_spin_shortened = _shorten_blas_spin()

import numpy as np  # noqa: E402  (after the line above: OpenBLAS reads its setting when NumPy loads it)

from .install import install_hint  # noqa: E402

__all__ = [
    "BackendUnavailable", "use_backend", "xp", "name", "is_cuda", "to_numpy", "asarray",
    "seed", "rng", "get_rng_state", "set_rng_state", "scatter_add_rows", "index_add", "device_info",
    "synchronize", "np", "parallel_rows", "host_threads", "kernel_device", "fast_kernels",
    "use_fast_kernels", "read_scalars", "flash_attention", "use_flash_attention", "blas_kernel",
]


class BackendUnavailable(RuntimeError):
    """The requested array backend cannot be used on this machine."""




def _cuda_fix() -> str:
    return (f"install CuPy for your CUDA version: {install_hint('cuda')} (CUDA 12) or "
            f"{install_hint('cuda13')} (CUDA 13)")

_ALIASES = {"numpy": "numpy", "cpu": "numpy", "cupy": "cupy", "cuda": "cupy", "gpu": "cupy",
            "cuda-sim": "cuda-sim"}

_state = {"name": "numpy", "xp": np, "rng": None, "seed": 0, "fast": True,
          "flash": os.environ.get("TINYGPT_FLASH_ATTENTION", "0").strip() == "1"}


def _enter_simulator():
    """NumPy arrays, CUDA kernel bodies run by numba's CUDA simulator (tests only). numba
    reads NUMBA_ENABLE_CUDASIM once, when numba.cuda is first imported (on the first launch,
    kernels/cuda/launch.py): it must not have been imported for a real GPU already."""
    import importlib.util
    if importlib.util.find_spec("numba") is None:
        raise BackendUnavailable(f"the cuda-sim backend needs numba-cuda: {install_hint('test')}")
    numba = sys.modules.get("numba")
    if "numba.cuda" in sys.modules and not getattr(numba.config, "ENABLE_CUDASIM", False):
        raise BackendUnavailable("numba.cuda was imported for a real GPU before the cuda-sim backend was "
                                 "chosen; choose it in a new process")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if numba is not None:
        numba.config.ENABLE_CUDASIM = 1
    return np


def _load_cupy():
    """Import CuPy and check that a CUDA device is there; one clear error otherwise."""
    try:
        import cupy  # noqa: F401  (the one place CuPy is imported)
    except Exception as exc:  # ImportError, or a broken CUDA runtime raising at import
        raise BackendUnavailable(
            f"CuPy is not installed or failed to import ({type(exc).__name__}: {exc}); {_cuda_fix()}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailable(
            f"CuPy is installed but no CUDA device can be used ({exc}); "
            "run on a machine with an NVIDIA GPU and driver, or use --device cpu"
        ) from None
    if count < 1:
        raise BackendUnavailable("CuPy is installed but no CUDA device was found; use --device cpu")
    return cupy


def use_backend(name: str) -> None:
    """Select the array module: ``"numpy"``/``"cpu"`` or ``"cupy"``/``"cuda"``.

    Raises ``BackendUnavailable`` (one line, saying what is missing and how to fix it)
    when CuPy or a CUDA device is not available.
    """
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown backend {name!r}: choose 'numpy' (cpu) or 'cupy' (cuda)")
    module = np if key == "numpy" else _enter_simulator() if key == "cuda-sim" else _load_cupy()
    _state["name"] = key
    _state["xp"] = module
    seed(_state["seed"])  # a fresh generator on the new device, same seed


def xp():
    """The active array module (``numpy`` or ``cupy``)."""
    return _state["xp"]


def name() -> str:
    """``"numpy"`` or ``"cupy"``."""
    return _state["name"]


def is_cuda() -> bool:
    return _state["name"] == "cupy"


def kernel_device() -> str:
    """Where the kernels run: ``"cpu"`` (NumPy bodies) or ``"cuda"`` (CUDA bodies, on CuPy
    arrays, or on NumPy arrays in numba's simulator under the ``"cuda-sim"`` backend)."""
    return "cpu" if _state["name"] == "numpy" else "cuda"


def fast_kernels() -> bool:
    """Whether kernels that have a faster CPU body (``forward_fast``...) use it."""
    return _state["fast"]


def use_fast_kernels(on: bool) -> None:
    """Switch the faster CPU bodies on or off (off: every kernel runs its reference body)."""
    _state["fast"] = bool(on)


def flash_attention() -> bool:
    """Whether attention on CUDA takes its flash-style kernels (no T x T matrix kept)
    instead of the fused softmax; off by default (TINYGPT_FLASH_ATTENTION=1 turns it on)."""
    return _state["flash"]


def use_flash_attention(on: bool) -> None:
    _state["flash"] = bool(on)


def to_numpy(array):
    """A host NumPy array from a NumPy or CuPy array (or anything array-like)."""
    if hasattr(array, "get") and not isinstance(array, np.ndarray):
        return array.get()
    return np.asarray(array)


def read_scalars(values):
    """Numbers on the device (0-d arrays; None and Python numbers too) as one float64 host
    array, in one transfer: on a GPU each read waits for the queued work, so a loop that
    reads many numbers reads them together. None becomes NaN."""
    xp = _state["xp"]
    if not values:
        return np.zeros(0)
    stacked = xp.stack([xp.asarray(v if v is not None else np.nan, dtype=xp.float64) for v in values])
    return to_numpy(stacked)


def asarray(data, dtype=None):
    """``data`` as an array of the active backend (copied to the device if needed)."""
    return _state["xp"].asarray(data, dtype=dtype)


def synchronize() -> None:
    """Wait for queued device work (for honest timings); a no-op on CPU."""
    if is_cuda():
        _state["xp"].cuda.get_current_stream().synchronize()


def blas_kernel() -> str | None:
    """The name of the kernels NumPy's OpenBLAS runs ("Haswell", "SkylakeX", ...), as OpenBLAS
    reports it, or None where NumPy's BLAS is not an OpenBLAS found beside NumPy (a NumPy
    built on MKL or Accelerate, say). OpenBLAS picks them for the processor when it loads,
    unless ``OPENBLAS_CORETYPE`` names others; they decide how fast every matrix product
    runs (on an AVX-512 machine measured here, a 2048 x 2048 float32 product ran at
    250-261 GFLOP/s with the Haswell kernels, which use AVX2, and 461-466 with SkylakeX's)."""
    import glob
    folder = os.path.dirname(os.path.abspath(np.__file__))
    candidates = sorted(glob.glob(os.path.join(folder + ".libs", "*openblas*"))
                        + glob.glob(os.path.join(folder, ".dylibs", "*openblas*")))
    for path in candidates:
        try:
            library = ctypes.CDLL(path)   # the copy NumPy loaded: the loader hands back the same one
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                       "openblas_get_corename"):
            function = getattr(library, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                name = function()
                return name.decode() if name else None
    return None


def device_info() -> str:
    """One line naming the device arrays live on (on the CPU, with the BLAS kernels in use)."""
    if _state["name"] == "cuda-sim":
        return "cuda-sim (numba's CUDA simulator, on the CPU)"
    if not is_cuda():
        kernel = blas_kernel()
        return "cpu (numpy " + np.__version__ + (f", OpenBLAS {kernel} kernels" if kernel else "") + ")"
    cp = _state["xp"]
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"cuda:{dev.id} {gpu} (cupy {cp.__version__})"


# ----------------------------------------------------------------------------- RNG
def seed(value: int) -> None:
    """Seed the engine's one random generator (on the active device)."""
    _state["seed"] = int(value)
    if is_cuda():
        _state["rng"] = _state["xp"].random.default_rng(int(value))
    else:
        _state["rng"] = np.random.default_rng(int(value))


def rng():
    """The engine's random generator (``numpy.random.Generator`` or CuPy's)."""
    if _state["rng"] is None:
        seed(_state["seed"])
    return _state["rng"]


def get_rng_state() -> dict:
    """A JSON-serialisable snapshot of the generator, for exact resumption."""
    gen = rng()
    if is_cuda():  # CuPy's generator state is not exposed; record the seed only
        return {"backend": "cupy", "seed": _state["seed"]}
    state = gen.bit_generator.state
    return {"backend": "numpy", "bit_generator": state["bit_generator"],
            "state": {k: int(v) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def set_rng_state(state: dict) -> None:
    """Restore a snapshot made by ``get_rng_state``."""
    if state.get("backend") != "numpy" or is_cuda():
        seed(state.get("seed", 0))
        return
    gen = rng()
    gen.bit_generator.state = {"bit_generator": state["bit_generator"], "state": dict(state["state"]),
                               "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}


# ----------------------------------------------------------------------------- device primitives
def scatter_add_rows(out, ids, rows) -> None:
    """``out[ids[i]] += rows[i]`` for every i, exact when ids repeat.

    ``out`` is (V, C), ``ids`` is (N,) integers and ``rows`` is (N, C). The naive
    ``out[ids] += rows`` keeps only one of the repeated rows; ``numpy.add.at`` is exact
    but slow. On CPU we sort the ids, sum each run of equal ids with
    ``numpy.add.reduceat`` and write every distinct id once. On CUDA, CuPy's
    ``scatter_add`` does the same with atomic adds.
    """
    if is_cuda():
        import cupyx  # noqa: F401  (part of CuPy: still the one place it is imported)
        cupyx.scatter_add(out, ids, rows)
        return
    if ids.size == 0:
        return
    order = np.argsort(ids, kind="stable")                 # (N,)
    sorted_ids = ids[order]                               # (N,)
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # first index of each run
    sums = np.add.reduceat(rows[order], starts, axis=0)   # (U, C): one row per distinct id
    out[sorted_ids[starts]] += sums                        # distinct ids: plain indexing is exact


def index_add(out, index, values) -> None:
    """``out[index] += values`` where ``index`` may pick an element more than once
    (advanced indexing); every repeat is added, unlike plain ``+=``."""
    if is_cuda():
        import cupyx  # noqa: F401  (part of CuPy: still the one place it is imported)
        cupyx.scatter_add(out, index, values)
    else:
        np.add.at(out, index, values)


# ----------------------------------------------------------------------------- host threads
_pool = {"executor": None}


def host_threads() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def parallel_rows(fn, n_rows: int, min_rows: int = 64) -> None:
    """Call ``fn(start, stop)`` on row ranges that together cover ``range(n_rows)``, in
    parallel threads, one per core.

    NumPy's elementwise loops run on one core but release Python's GIL, so a kernel can
    spread its elementwise work (exp, tanh, ...) over the cores by handing each thread
    its own rows; matrix products are already multi-threaded by BLAS. ``fn`` must only
    write to its own rows. On CUDA, or for fewer than ``2 * min_rows`` rows, one call.
    """
    workers = 1 if is_cuda() else min(host_threads(), n_rows // max(1, min_rows))
    if workers <= 1:
        fn(0, n_rows)
        return
    if _pool["executor"] is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool["executor"] = ThreadPoolExecutor(max_workers=host_threads(), thread_name_prefix="tinygpt-rows")
    bounds = [n_rows * i // workers for i in range(workers + 1)]
    floating = np.geterr()   # the caller's np.errstate: NumPy keeps it per thread, and a worker starts afresh

    def share(lo, hi):
        with np.errstate(**floating):
            fn(lo, hi)
    futures = [_pool["executor"].submit(share, bounds[i], bounds[i + 1]) for i in range(1, workers)]
    fn(bounds[0], bounds[1])  # the calling thread takes the first share
    for f in futures:
        f.result()  # re-raises a worker's exception


# ----------------------------------------------------------------------------- host memory
def _reuse_freed_memory() -> bool:
    """Ask glibc's malloc to serve arrays below 32 MB from its heap and to keep the memory
    freed there for reuse, instead of mapping fresh pages from the OS for each new array
    (its default above 128 KB, adapted as it goes) and giving them back on free.

    Why: a training step allocates its activations anew while the tape keeps the previous
    ones alive, so with the default every step's arrays landed on fresh pages, and the OS
    faulted in and zeroed each page on first touch. Measured on 2 cores: a baby-char
    training step 54 ms with the default, 38 ms with this; the elementwise kernels (GELU,
    layer norm) had spent most of their time in page faults. The cost: memory a step has
    freed stays with the process for the next step (its peak does not grow).

    Linux with glibc only (elsewhere nothing changes); TINYGPT_MALLOC=0 leaves malloc as it
    is. A process-wide setting, made once when autograd is imported."""
    if not sys.platform.startswith("linux") or os.environ.get("TINYGPT_MALLOC", "1").strip() == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):   # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3                     # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


malloc_tuned = _reuse_freed_memory()


def _init_from_environment() -> None:
    wanted = os.environ.get("TINYGPT_DEVICE", "").strip().lower()
    if wanted in ("", "cpu", "numpy"):
        return
    if wanted not in _ALIASES:
        raise ValueError(f"TINYGPT_DEVICE={wanted!r} is not understood: use 'cpu' or 'cuda'")
    use_backend(wanted)


_init_from_environment()
