"""Fix the thread count of every math library before any of them starts.

Import this first (before numpy or torch): ``--threads N`` on the command line, or all
cores, becomes OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and
NUMBA_NUM_THREADS, so that NumPy's BLAS, numba's parallel loops (tinygpt's compiled
decoding) and PyTorch use the same number of threads. With fewer threads than the
cores this process may use, the process is also pinned to its first N cores: tinygpt's
row-splitting thread pool sizes itself by the cores a process may use, and so gets N
workers too. Child processes inherit both (the environment and the pinning), which is
how the benchmarks run every framework at the same thread count.

It also sets ``OPENBLAS_THREAD_TIMEOUT=20`` (unless set), the value autograd/backend.py sets
when it is imported before NumPy, as in the ``tinygpt`` command: these scripts import NumPy
first, so without it the tinygpt children would keep OpenBLAS's default and measure
something a user of the command does not run. PyTorch's CPU build does its products with
MKL, which ignores the variable.
"""
import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _threads_from_argv(argv=None):
    """N from ``--threads N`` or ``--threads=N`` (the last one given, as argparse reads
    them), else every core. A value that is not an integer is left to the script's own
    argparse, which says so."""
    argv = sys.argv[1:] if argv is None else argv
    found = None
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--threads="):
            found = arg.split("=", 1)[1]
    try:
        return int(found) if found is not None else os.cpu_count() or 1
    except ValueError:
        return os.cpu_count() or 1


def configure(threads: int) -> int:
    """Set the thread variables to ``threads`` and pin this process to that many cores
    (when it may use more); return ``threads``. Call it before numpy or torch is imported."""
    threads = int(threads)
    if threads < 1:
        raise SystemExit(f"--threads must be at least 1, got {threads}")
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")   # as autograd/backend.py
    try:
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])
    except AttributeError:  # not on Linux: the variables alone
        pass
    return threads


THREADS = configure(_threads_from_argv())
