"""numba-cuda, imported on first use, and the launch configuration of the CUDA kernels.

The kernels in this folder are CUDA Python: functions decorated with ``numba.cuda.jit``
that numba compiles for the GPU the first time they are launched with a given dtype
(float32 or float64). The same code runs in two places:

  * on a real GPU, on the CuPy arrays of the CuPy backend (numba reads them through
    ``__cuda_array_interface__``, without a copy);
  * in numba's CUDA simulator (environment variable ``NUMBA_ENABLE_CUDASIM=1``, set before
    numba is first imported), on NumPy arrays, on any machine: each GPU thread becomes a
    Python thread. That is how the tests check the kernels without a GPU.

numba is imported here and nowhere else, and only when a kernel is first launched:
the engine imports and runs on CPU without numba installed.

Launch configuration. A kernel that owns one row per block (layer norm, the softmaxes)
walks its row with a stride of ``blockDim.x`` threads and reduces across the block in
shared memory (reductions.py), so any power of two works as the block size. An
elementwise kernel runs a grid-stride loop: thread ``k`` of the grid takes elements
``k, k + gridsize, k + 2 gridsize, ...``, so any number of blocks works. The kernels'
results do not depend on these choices beyond rounding (the order of a row's sums); only
the speed does. A real GPU wants many
threads in flight (row_threads says how many a row gets); the simulator costs
milliseconds per simulated thread and wants a handful.
``config`` picks between the two presets below, and tests may set it to their own.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ... import backend

MAX_THREADS = 1024   # CUDA's limit of threads per block: the length of the shared scratch arrays
FLASH_TILE = 16      # flash attention: rows of the streamed side per shared-memory tile
FLASH_HEAD_SIZE_MAX = 128   # flash attention: the largest head size (each thread's rows are this long)

_numba = {"cuda": None, "simulated": False, "config": None}
HERE = Path(__file__).parent
SHARED_FILES = ("launch.py", "reductions.py")   # compiled into the kernels of the other files


def numba_cuda():
    """The ``numba.cuda`` module, imported on the first call."""
    if _numba["cuda"] is None:
        numpy = backend.np
        if not hasattr(numpy, "row_stack"):
            # numba-cuda 0.30.4 registers a GPU version of numpy.row_stack whenever NumPy >= 2.0,
            # but NumPy 2.5 removed that alias of vstack, so importing numba-cuda's array
            # support fails with AttributeError (seen on NumPy 2.5.2; numba itself checks for
            # < 2.5). Restoring the alias, which NumPy 2.0-2.4 define as vstack, lets it import.
            numpy.row_stack = numpy.vstack
        try:
            import numba  # noqa: F401  (the one place numba is imported)
            from numba import cuda
        except ImportError as exc:
            raise ImportError(
                f"tinygpt's CUDA kernels are written with numba-cuda, which failed to import ({exc}); "
                'install it next to CuPy: pip install "numba-cuda[cu12]" (or "numba-cuda[cu13]" for CUDA 13)'
            ) from exc
        config = getattr(cuda, "config", numba.config)   # numba-cuda's settings (older numba: numba.config)
        _numba["config"] = config
        _numba["simulated"] = bool(config.ENABLE_CUDASIM)
        if not _numba["simulated"]:
            # CuPy hands its arrays to numba through __cuda_array_interface__, which names the
            # stream the array was made on; by default numba synchronises that stream before
            # each launch, so that a kernel never reads an array still being written on another
            # stream. Here both CuPy and numba queue their work on the legacy default stream,
            # which runs it in order, so the sync would only stall the CPU at every launch
            # (and turn every kernel call into a full wait for the GPU). Off.
            config.CUDA_ARRAY_INTERFACE_SYNC = 0
            # A launch of few blocks (a small model, a short batch) is expected here; numba
            # would otherwise print a performance warning at every such launch.
            config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
        _numba["cuda"] = cuda
    return _numba["cuda"]


def shared_source_hash(folder=HERE) -> str | None:
    """The first 16 hex digits of the SHA-256 of SHARED_FILES' contents in ``folder``; None
    where they cannot be read (a zipped install)."""
    digest = hashlib.sha256()
    try:
        for name in SHARED_FILES:
            digest.update((Path(folder) / name).read_bytes())
    except OSError:
        return None
    return digest.hexdigest()[:16]


def cached_kernel(fn):
    """``numba.cuda.jit(cache=True)(fn)``, its cache in a folder named after the contents of
    this file and reductions.py. numba keys a cached kernel on its own source file only, and
    compiles into it the device functions it calls (reductions.py's block_sum) and the
    constants it reads (MAX_THREADS, FLASH_TILE): after one of those changed, a kernel in
    another file would go on loading its old machine code from the cache, while its launcher
    used the new values (a flash-attention kernel built for one tile size, launched for
    another). Under a folder ``shared-<hash>`` (below NUMBA_CACHE_DIR when that is set, else
    in the __pycache__ beside the kernel), a change to either file compiles the kernels
    afresh. The same as the CPU loops' ``cpu/loops.py njit_with_these_loops``."""
    cuda = numba_cuda()
    source_hash = shared_source_hash()
    config = _numba["config"]
    if source_hash is None or config is None:
        return cuda.jit(cache=True)(fn)
    saved = config.CACHE_DIR                   # numba picks a kernel's cache folder from it, once
    root = saved or str(Path(fn.__code__.co_filename).parent / "__pycache__")
    config.CACHE_DIR = os.path.join(root, f"shared-{source_hash}")
    try:
        return cuda.jit(cache=True)(fn)
    finally:
        config.CACHE_DIR = saved


def simulated() -> bool:
    """Whether the kernels run in numba's CUDA simulator (imports numba)."""
    numba_cuda()
    return _numba["simulated"]


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class LaunchConfig:
    """How many threads and blocks the launchers ask for."""
    max_row_threads: int   # most threads of a block that owns one row; a power of two <= MAX_THREADS
    element_threads: int   # threads per block of the elementwise kernels; a power of two <= MAX_THREADS
    max_blocks: int        # most blocks of an elementwise kernel; beyond, the threads loop (grid stride)
    row_elements: int = 1  # elements of its row each thread of a row kernel aims to take (row_threads)

    def __post_init__(self):
        for name in ("max_row_threads", "element_threads"):
            value = getattr(self, name)
            if not (_power_of_two(value) and value <= MAX_THREADS):
                raise ValueError(f"LaunchConfig.{name}={value}: use a power of two from 1 to {MAX_THREADS} "
                                 "(the block reductions fold the block in halves)")
        if self.max_blocks < 1:
            raise ValueError(f"LaunchConfig.max_blocks={self.max_blocks}: use at least 1")
        if self.row_elements < 1:
            raise ValueError(f"LaunchConfig.row_elements={self.row_elements}: use at least 1")


ON_GPU = LaunchConfig(max_row_threads=1024, element_threads=256, max_blocks=65535, row_elements=16)
IN_SIMULATOR = LaunchConfig(max_row_threads=16, element_threads=16, max_blocks=4)   # a few ms per thread

config = None   # None: ON_GPU on a real GPU, IN_SIMULATOR in numba's simulator; tests set a LaunchConfig


def current() -> LaunchConfig:
    if config is not None:
        return config
    return IN_SIMULATOR if simulated() else ON_GPU


WARP = 32   # threads a GPU runs in lockstep: a block of fewer still occupies a whole warp


def row_threads(width: int) -> int:
    """Threads of a block that owns a row of ``width``: the power of two that gives each
    thread about ``row_elements`` of the row (each takes every blockDim-th element), at most
    ``max_row_threads``; at least a warp where the row is that long, and for a shorter row
    the power of two that covers it.

    Why not the power of two that covers the row (the rule until 2026-11-30, which
    row_elements 1 gives): rows of 768 (layer norm) and 1024 (attention at T 1024) then got
    blocks of 1024 threads. An SM of an H100/H200 holds at most 2048 threads, so two such
    blocks, and only one where a thread needs more than 32 of the SM's 65,536 registers.
    Each reduction stops the whole block at a barrier until all 32 of its warps arrive, in
    each of log2(1024) = 10 rounds, two or three reductions a row, and while its one or two
    blocks wait the SM has nothing else to run. A profile of a GPT-2 step on an H200 put a
    layer's attention forward (two batched products and this softmax; the profile does not
    separate them) at 3.5 ms, where the softmax's 800 MB read and written take about 0.2 ms
    at the memory's bandwidth, and a layer norm forward at 0.7 ms a call for 75 MB. With
    fewer threads a row, a block waits on fewer warps for fewer rounds, more blocks share
    an SM, and each thread's loads are in flight together.

    Measured on the H200 (benchmarks/README.md: the profiled GPT-2 step at batch 8, context
    1024, each setting in its own process, alternating), attention (forward and backward),
    layer norm and the whole step in ms, in two runs (the second after AdamW's launches
    were cut from 148 to 2):
        first run    row_elements  1: attention 99-100, layer norm 42-44, step 303-316
                     row_elements  4: attention 62,     layer norm 22-23, step 209-212
        second run   row_elements  4: attention 62,     layer norm 20-23, step 170-183
                     row_elements  8: attention 56-57,  layer norm 19,    step 160-164
                     row_elements 16: attention 55,     layer norm 18-20, step 158-164
                     row_elements 32: attention 55,     layer norm 18,    step 158-159
    16 it is: rows of 768 and 1024 get 64 threads (2 warps), the 50257-wide loss rows still
    1024. Results do not depend on this beyond rounding (the order of a row's sums); only
    the speed does."""
    cfg = current()
    cover = 1                                  # the power of two that covers the row
    while cover < width and cover < cfg.max_row_threads:
        cover *= 2
    threads = 1
    while threads * cfg.row_elements < width and threads < cfg.max_row_threads:
        threads *= 2
    return max(threads, min(WARP, cover))


def flash_rows() -> int:
    """Threads (rows: queries or keys) per block of the flash-attention kernels."""
    return min(64, current().element_threads)


def elementwise_grid(n: int) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over ``n`` elements."""
    threads = current().element_threads
    blocks = min(current().max_blocks, max(1, (n + threads - 1) // threads))
    return blocks, threads
